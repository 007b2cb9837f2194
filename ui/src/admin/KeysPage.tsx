import { useState, type FormEvent } from "react";
import { describeError } from "../api/client";
import { checkLimits, isValid, placeError, type FieldErrors, type LimitField } from "./forms";
import { formatWhen } from "./format";
import { Field, PageHeader, QueryView, StatusBadge, invalidProps } from "./parts";
import { useApiKeys, useCreateKey, useRevokeKey, useTeams } from "./queries";
import type { ApiKey, NewApiKey } from "./types";

const SCOPES = ["inference", "admin"] as const;

export function KeysPage() {
  const keys = useApiKeys();
  const [created, setCreated] = useState<NewApiKey | null>(null);
  return (
    <>
      <PageHeader title="API keys" />
      <CreateKeyForm onCreated={setCreated} />
      {created && <NewKeySecret created={created} onDone={() => setCreated(null)} />}
      <QueryView
        query={keys}
        what="API keys"
        isEmpty={(data) => data.length === 0}
        empty={<p>No API keys yet. Create one above.</p>}
      >
        {(data) => <KeyTable keys={data} />}
      </QueryView>
    </>
  );
}

type KeyField = "name" | "owner" | "scopes" | "team" | LimitField;
const KEY_FIELDS: KeyField[] = ["name", "owner", "scopes", "team", "rpm", "tpm", "budget_usd", "budget_period"];
const NO_LIMITS = { rpm: "", tpm: "", budget_usd: "", budget_period: "" };

function CreateKeyForm({ onCreated }: { onCreated: (key: NewApiKey) => void }) {
  const create = useCreateKey();
  const teams = useTeams();
  const [name, setName] = useState("");
  const [owner, setOwner] = useState("");
  const [team, setTeam] = useState("");
  const [limitsDraft, setLimitsDraft] = useState(NO_LIMITS);
  const [scopes, setScopes] = useState<string[]>(["inference"]);
  const [errors, setErrors] = useState<FieldErrors<KeyField>>({});
  const [formError, setFormError] = useState<string | null>(null);

  function submit(event: FormEvent) {
    event.preventDefault();
    const { errors: limitErrors, limits } = checkLimits(limitsDraft);
    const found: FieldErrors<KeyField> = { ...limitErrors };
    if (!name.trim()) found.name = "Give the key a name.";
    if (scopes.length === 0) found.scopes = "Choose at least one scope.";
    setErrors(found);
    setFormError(null);
    if (!isValid(found)) return;
    const body = {
      name: name.trim(), owner: owner.trim(), scopes, ...limits, ...(team ? { team } : {}),
    };
    create.mutate(body, {
      onSuccess: (key) => { onCreated(key); setName(""); setOwner(""); setLimitsDraft(NO_LIMITS); },
      onError: (error) => {
        const placed = placeError(error, KEY_FIELDS);
        if (placed.field) setErrors({ [placed.field]: placed.message });
        else setFormError(placed.message);
      },
    });
  }
  const toggle = (scope: string) =>
    setScopes((current) => (current.includes(scope) ? current.filter((s) => s !== scope) : [...current, scope]));
  const limit = (field: Exclude<LimitField, "budget_period">, id: string, label: string, hint: string) => (
    <Field id={id} label={label} error={errors[field]} hint={hint}>
      <input id={id} inputMode="decimal" value={limitsDraft[field]}
        onChange={(e) => setLimitsDraft((d) => ({ ...d, [field]: e.target.value }))} {...invalidProps(id, errors[field])} />
    </Field>
  );
  return (
    <form className="card create-key admin-form" onSubmit={submit} noValidate aria-labelledby="create-key-title">
      <h3 id="create-key-title">Create a key</h3>
      <div className="form-grid">
        <Field id="key-name" label="Name" error={errors.name}>
          <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} maxLength={200}
            {...invalidProps("key-name", errors.name)} />
        </Field>
        <Field id="key-owner" label="Owner" error={errors.owner} hint="optional: who uses it (usage by user)">
          <input id="key-owner" value={owner} onChange={(e) => setOwner(e.target.value)} maxLength={200}
            {...invalidProps("key-owner", errors.owner)} />
        </Field>
        <Field id="key-team" label="Team" error={errors.team} hint="its limits apply to all its keys">
          <select id="key-team" value={team} onChange={(e) => setTeam(e.target.value)} {...invalidProps("key-team", errors.team)}>
            <option value="">No team</option>
            {(teams.data ?? []).map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
          </select>
        </Field>
        {limit("rpm", "key-rpm", "Requests a minute", "blank: no limit")}
        {limit("tpm", "key-tpm", "Tokens a minute", "blank: no limit")}
        {limit("budget_usd", "key-budget", "Budget (USD)", "blank: no budget")}
        <Field id="key-period" label="Budget period" error={errors.budget_period}>
          <select id="key-period" value={limitsDraft.budget_period}
            onChange={(e) => setLimitsDraft((d) => ({ ...d, budget_period: e.target.value }))}
            {...invalidProps("key-period", errors.budget_period)}>
            <option value="">—</option>
            <option value="day">Per day</option>
            <option value="month">Per month</option>
            <option value="total">In total</option>
          </select>
        </Field>
      </div>
      <fieldset className="scopes" aria-describedby={errors.scopes ? "key-scopes-error" : undefined}>
        <legend>Scopes</legend>
        {SCOPES.map((scope) => (
          <label key={scope}>
            <input type="checkbox" checked={scopes.includes(scope)} onChange={() => toggle(scope)} /> {scope}
          </label>
        ))}
        {errors.scopes && <small className="field-error error" id="key-scopes-error" role="alert">{errors.scopes}</small>}
      </fieldset>
      <button type="submit" className="primary" disabled={create.isPending}>
        {create.isPending ? "Creating…" : "Create key"}
      </button>
      {formError && <p className="error" role="alert">{formError}</p>}
    </form>
  );
}

/** The secret, shown this once: the server keeps only its hash. */
function NewKeySecret({ created, onDone }: { created: NewApiKey; onDone: () => void }) {
  const [copied, setCopied] = useState<string | null>(null);
  async function copy() {
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied("Copied.");
    } catch {
      setCopied("Copying was refused by the browser: select the key and copy it by hand.");
    }
  }
  return (
    <section className="card secret" aria-labelledby="secret-title">
      <h3 id="secret-title">Key “{created.name}” created</h3>
      <p>Copy it now: it is shown only this once.</p>
      <div className="secret-row">
        <label htmlFor="new-key-secret" className="visually-hidden">New API key</label>
        <input id="new-key-secret" readOnly value={created.key} onFocus={(e) => e.target.select()} />
        <button type="button" onClick={copy}>Copy</button>
        <button type="button" className="ghost" onClick={onDone}>Done</button>
      </div>
      <p role="status" aria-live="polite" className="muted">{copied}</p>
    </section>
  );
}

function KeyTable({ keys }: { keys: ApiKey[] }) {
  const revoke = useRevokeKey();
  function confirmRevoke(key: ApiKey) {
    if (window.confirm(`Revoke key “${key.name}”? Anything using it stops working at once.`)) revoke.mutate(key.id);
  }
  return (
    <>
      {revoke.isError && <p className="error" role="alert">{describeError(revoke.error)}</p>}
      <div className="table-scroll">
        <table className="data-table" aria-label="API keys">
          <thead>
            <tr>
              <th scope="col">Name</th><th scope="col">Key</th><th scope="col">Owner</th><th scope="col">Team</th>
              <th scope="col">Scopes</th>
              <th scope="col">Limits</th><th scope="col">Created</th><th scope="col">State</th>
              <th scope="col"><span className="visually-hidden">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {keys.map((key) => (
              <tr key={key.id} data-key-name={key.name}>
                <td>{key.name}</td>
                <td><code>{key.display_prefix}…</code></td>
                <td>{key.owner || "—"}</td>
                <td>{key.team?.name ?? "—"}</td>
                <td>{key.scopes.join(", ")}</td>
                <td>{limits(key)}</td>
                <td>{formatWhen(key.created_at)}</td>
                <td><StatusBadge status={key.revoked_at ? "revoked" : "active"} /></td>
                <td>
                  {!key.revoked_at && (
                    <button type="button" className="small danger" onClick={() => confirmRevoke(key)}
                      disabled={revoke.isPending} aria-label={`Revoke ${key.name}`}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

function limits(key: ApiKey): string {
  const parts = [
    key.rpm && `${key.rpm} rpm`,
    key.tpm && `${key.tpm} tpm`,
    key.budget_usd && `$${key.budget_usd}/${key.budget_period ?? "total"}`,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : "—";
}
