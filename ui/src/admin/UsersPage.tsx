import { useState, type FormEvent } from "react";
import { useMe } from "../api/queries";
import { describeError } from "../api/client";
import { checkUser, isValid, placeError, type FieldErrors, type UserField } from "./forms";
import { formatWhen, humanize } from "./format";
import { Field, PageHeader, QueryView, StatusBadge, invalidProps } from "./parts";
import { useCreateUser, useUpdateUser, useUsers } from "./queries";
import type { ConsoleUser } from "./types";
import { UserIdentities } from "./UserIdentities";

const ROLES = ["user", "builder", "admin"] as const;
const USER_FIELDS: UserField[] = ["username", "password", "role", "display_name"];
/** Columns of the users table (a user's identities open in a row spanning them all). */
const COLUMNS = 8;

export function UsersPage() {
  const users = useUsers();
  return (
    <>
      <PageHeader title="Users" />
      <CreateUserForm />
      <QueryView query={users} what="users" isEmpty={(d) => d.length === 0} empty={<p>No users yet.</p>}>
        {(data) => <UserTable users={data} />}
      </QueryView>
    </>
  );
}

const BLANK = { username: "", password: "", role: "user", display_name: "" };

function CreateUserForm() {
  const create = useCreateUser();
  const [draft, setDraft] = useState(BLANK);
  const [errors, setErrors] = useState<FieldErrors<UserField>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const set = (field: UserField) => (value: string) => setDraft((d) => ({ ...d, [field]: value }));

  function submit(event: FormEvent) {
    event.preventDefault();
    const found = checkUser(draft);
    setErrors(found);
    setFormError(null);
    setDone(null);
    if (!isValid(found)) return;
    create.mutate(
      { ...draft, username: draft.username.trim(), display_name: draft.display_name.trim() },
      {
        onSuccess: (user) => { setDraft(BLANK); setDone(`User “${user.username}” created.`); },
        onError: (error) => {
          const placed = placeError(error, USER_FIELDS);
          if (placed.field) setErrors({ [placed.field]: placed.message });
          else setFormError(placed.message);
        },
      },
    );
  }
  return (
    <form className="card admin-form" onSubmit={submit} noValidate aria-labelledby="create-user-title">
      <h3 id="create-user-title">Create a user</h3>
      <div className="form-grid">
        <Field id="user-username" label="Username" error={errors.username}>
          <input id="user-username" value={draft.username} onChange={(e) => set("username")(e.target.value)}
            autoComplete="off" maxLength={100} {...invalidProps("user-username", errors.username)} />
        </Field>
        <Field id="user-display-name" label="Display name" error={errors.display_name} hint="optional">
          <input id="user-display-name" value={draft.display_name} onChange={(e) => set("display_name")(e.target.value)}
            maxLength={200} {...invalidProps("user-display-name", errors.display_name)} />
        </Field>
        <Field id="user-password" label="Initial password" error={errors.password}>
          <input id="user-password" type="password" value={draft.password} autoComplete="new-password"
            onChange={(e) => set("password")(e.target.value)} {...invalidProps("user-password", errors.password)} />
        </Field>
        <Field id="user-role" label="Role" error={errors.role}>
          <select id="user-role" value={draft.role} onChange={(e) => set("role")(e.target.value)}
            {...invalidProps("user-role", errors.role)}>
            {ROLES.map((role) => <option key={role} value={role}>{humanize(role)}</option>)}
          </select>
        </Field>
      </div>
      <button type="submit" className="primary" disabled={create.isPending}>
        {create.isPending ? "Creating…" : "Create user"}
      </button>
      {formError && <p className="error" role="alert">{formError}</p>}
      <p className="muted" role="status" aria-live="polite">{done}</p>
    </form>
  );
}

function UserTable({ users }: { users: ConsoleUser[] }) {
  const me = useMe();
  const update = useUpdateUser();
  const [failure, setFailure] = useState<{ id: string; message: string } | null>(null);
  const [shown, setShown] = useState<ReadonlySet<string>>(new Set());
  function toggleIdentities(id: string) {
    setShown((now) => {
      const next = new Set(now);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  }
  function change(user: ConsoleUser, changes: { role?: string; disabled?: boolean }) {
    setFailure(null);
    update.mutate({ id: user.id, ...changes }, {
      onError: (error) => setFailure({ id: user.id, message: describeError(error) }),
    });
  }
  function toggle(user: ConsoleUser) {
    const verb = user.disabled ? "Enable" : "Disable";
    const note = user.disabled ? "" : " Their sessions end at once.";
    if (window.confirm(`${verb} ${user.username}?${note}`)) change(user, { disabled: !user.disabled });
  }
  return (
    <div className="table-scroll">
      <table className="data-table" aria-label="Users">
        <thead>
          <tr>
            <th scope="col">Username</th><th scope="col">Name</th><th scope="col">Role</th>
            <th scope="col">Last sign-in</th><th scope="col">Created</th><th scope="col">State</th>
            <th scope="col">Sign-in identities</th>
            <th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {users.map((user) => (
            <UserRow key={user.id} user={user} self={me.data?.id === user.id} busy={update.isPending}
              failure={failure?.id === user.id ? failure.message : null} open={shown.has(user.id)}
              onChange={(changes) => change(user, changes)} onToggle={() => toggle(user)}
              onIdentities={() => toggleIdentities(user.id)} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

function UserRow({
  user, self, busy, failure, open, onChange, onToggle, onIdentities,
}: {
  user: ConsoleUser;
  self: boolean;
  busy: boolean;
  failure: string | null;
  /** Whether the user's sign-in identities show in a row below. */
  open: boolean;
  onChange: (changes: { role?: string }) => void;
  onToggle: () => void;
  onIdentities: () => void;
}) {
  return (
    <>
      <tr data-username={user.username}>
        <td>{user.username}{self && <span className="muted"> (you)</span>}</td>
        <td>{user.display_name || "—"}</td>
        <td>
          <label htmlFor={`role-${user.id}`} className="visually-hidden">Role of {user.username}</label>
          <select id={`role-${user.id}`} value={user.role} disabled={self || busy}
            onChange={(e) => onChange({ role: e.target.value })}>
            {ROLES.map((role) => <option key={role} value={role}>{humanize(role)}</option>)}
          </select>
          {failure && <p className="error" role="alert">{failure}</p>}
        </td>
        <td>{formatWhen(user.last_login_at)}</td>
        <td>{formatWhen(user.created_at)}</td>
        <td><StatusBadge status={user.disabled ? "disabled" : "active"} /></td>
        <td>
          <button type="button" className="small" aria-expanded={open} aria-controls={`identities-${user.id}`}
            aria-label={`Identities of ${user.username}`} onClick={onIdentities}>
            Identities
          </button>
        </td>
        <td>
          {!self && (
            <button type="button" className={`small${user.disabled ? "" : " danger"}`} onClick={onToggle}
              disabled={busy} aria-label={`${user.disabled ? "Enable" : "Disable"} ${user.username}`}>
              {user.disabled ? "Enable" : "Disable"}
            </button>
          )}
        </td>
      </tr>
      {open && (
        <tr id={`identities-${user.id}`} className="detail-row">
          <td colSpan={COLUMNS}><UserIdentities user={user} /></td>
        </tr>
      )}
    </>
  );
}
