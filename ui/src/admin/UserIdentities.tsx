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

  function confirmUnbind(list: UserIdentity[]) {
    if (!window.confirm(unbindQuestion(user.username, list))) return;
    setFailure(null);
    setDone(null);
    unbind.mutate(undefined, {
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
            failure={failure} onUnbind={() => confirmUnbind(list)} />
        )}
      </QueryView>
      <p className="muted" role="status" aria-live="polite" tabIndex={-1} ref={status}>{done}</p>
    </section>
  );
}

/** The bound subjects in a table, the Unbind button, and the server's refusal beside it. */
export function IdentityList({
  username, userId, identities, pending, failure, onUnbind,
}: {
  username: string;
  userId: string;
  identities: UserIdentity[];
  pending: boolean;
  failure: string | null;
  onUnbind: () => void;
}) {
  const errorId = `unbind-error-${userId}`;
  return (
    <>
      <table className="data-table compact" aria-label={`Sign-in identities of ${username}`}>
        <thead>
          <tr><th scope="col">Provider</th><th scope="col">Subject</th><th scope="col">Bound</th></tr>
        </thead>
        <tbody>
          {identities.map((identity) => (
            <tr key={identity.issuer} data-issuer={identity.issuer}>
              <td>{providerName(identity.issuer)} <small className="muted">{identity.issuer}</small></td>
              <td><code>{identity.subject}</code></td>
              <td>{formatWhen(identity.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="button" className="small danger" onClick={onUnbind} disabled={pending}
        aria-label={`Unbind the sign-in identities of ${username}`}
        {...(failure ? { "aria-describedby": errorId } : {})}>
        {pending ? "Unbinding…" : "Unbind"}
      </button>
      {failure && <p className="error" role="alert" id={errorId}>Could not unbind: {failure}</p>}
    </>
  );
}
