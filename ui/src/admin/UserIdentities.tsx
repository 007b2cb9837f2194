/** A user's sign-in identities (the provider subjects bound at their first OpenID Connect
 * sign-in) with the way to unbind them, for the admin's Users page. */
import { useRef, useState } from "react";
import { describeError } from "../api/client";
import { formatWhen } from "./format";
import { providerName, unbindQuestion, unboundMessage } from "./identities";
import { QueryView } from "./parts";
import { useUnbindIdentities, useUserIdentities } from "./queries";
import type { ConsoleUser, UserIdentity } from "./types";

export function UserIdentities({ user }: { user: ConsoleUser }) {
  const identities = useUserIdentities(user.id);
  const unbind = useUnbindIdentities(user.id);
  const [failure, setFailure] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const status = useRef<HTMLParagraphElement>(null);

  /** Unbinds the identities listed: all of the user's, or the one given. */
  function confirmUnbind(list: UserIdentity[], one?: UserIdentity) {
    if (!window.confirm(unbindQuestion(user.username, one ? [one] : list))) return;
    setFailure(null);
    setDone(null);
    unbind.mutate(one, {
      onSuccess: (answer) => {
        setDone(unboundMessage(user.username, answer.deleted));
        // The button goes with the list: keep the keyboard where the outcome is told.
        status.current?.focus();
      },
      onError: (error) => setFailure(describeError(error)),
    });
  }
  return (
    <section className="user-identities" aria-labelledby={`identities-title-${user.id}`}>
      <h3 id={`identities-title-${user.id}`}>Sign-in identities of {user.username}</h3>
      <QueryView query={identities} what="sign-in identities" isEmpty={(d) => d.length === 0}
        empty={<p>No identity provider is bound to {user.username}.</p>}>
        {(list) => (
          <IdentityList username={user.username} userId={user.id} identities={list} pending={unbind.isPending}
            failure={failure} onUnbind={(one) => confirmUnbind(list, one)} />
        )}
      </QueryView>
      <p className="muted" role="status" aria-live="polite" tabIndex={-1} ref={status}>{done}</p>
    </section>
  );
}

/** The bound subjects in a table, an Unbind button for each and one for all, and the
 * server's refusal beside them. */
export function IdentityList({
  username, userId, identities, pending, failure, onUnbind,
}: {
  username: string;
  userId: string;
  identities: UserIdentity[];
  pending: boolean;
  failure: string | null;
  /** Unbinds the identity given, or all of them. */
  onUnbind: (identity?: UserIdentity) => void;
}) {
  const errorId = `unbind-error-${userId}`;
  const describedBy = failure ? { "aria-describedby": errorId } : {};
  return (
    <>
      <table className="data-table compact" aria-label={`Sign-in identities of ${username}`}>
        <thead>
          <tr><th scope="col">Provider</th><th scope="col">Subject</th><th scope="col">Bound</th><th scope="col"><span className="visually-hidden">Actions</span></th></tr>
        </thead>
        <tbody>
          {identities.map((identity) => (
            <tr key={identity.issuer} data-issuer={identity.issuer}>
              <td>{providerName(identity.issuer)} <small className="muted">{identity.issuer}</small></td>
              <td><code>{identity.subject}</code></td>
              <td>{formatWhen(identity.created_at)}</td>
              <td>
                <button type="button" className="small danger" onClick={() => onUnbind(identity)} disabled={pending}
                  aria-label={`Unbind ${username} from ${providerName(identity.issuer)} (${identity.issuer})`}
                  {...describedBy}>
                  Unbind
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="button" className="small danger" onClick={() => onUnbind()} disabled={pending}
        aria-label={`Unbind the sign-in identities of ${username}`} {...describedBy}>
        {pending ? "Unbinding…" : "Unbind all"}
      </button>
      {failure && <p className="error" role="alert" id={errorId}>Could not unbind: {failure}</p>}
    </>
  );
}
