/** Words for a user's sign-in identities (tested with Vitest). */
import type { UserIdentity } from "./types";

/** The provider as people know it: "Google" for Google's issuer, else the issuer's host
 * (as the login page's "Sign in with …" button names it when no name is set). */
export function providerName(issuer: string): string {
  let host: string;
  try {
    host = new URL(issuer).host;
  } catch {
    return issuer;
  }
  return host === "accounts.google.com" ? "Google" : host;
}

function providers(identities: UserIdentity[]): string {
  const names = [...new Set(identities.map((i) => providerName(i.issuer)))];
  return names.length <= 1 ? (names[0] ?? "their identity provider") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

/** The question asked before unbinding: what goes, and what happens at the next sign-in. */
export function unbindQuestion(username: string, identities: UserIdentity[]): string {
  return (
    `Unbind ${username} from ${providers(identities)}? ` +
    "Their next sign-in there is matched by e-mail address and binds the account again."
  );
}

/** What the server did, in words. */
export function unboundMessage(username: string, deleted: number): string {
  if (deleted === 0) return `${username} had no sign-in identities left to unbind.`;
  const what = deleted === 1 ? "1 sign-in identity" : `${deleted} sign-in identities`;
  return `Unbound ${what} from ${username}.`;
}
