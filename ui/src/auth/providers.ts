/** Sign-in methods the server offers (`GET /v1/auth/providers`) and the login page's
 * logic for them, kept apart from React so it can be tested on its own. */

export interface OidcProvider {
  name: string;
  login_url: string;
}

export interface AuthProviders {
  object: "auth.providers";
  password: boolean;
  oidc: OidcProvider | null;
}

/** Only same-app paths: never an open redirect to another site. */
export function safeNext(next: string | null | undefined): string {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.includes("\\")) {
    return "/chat";
  }
  return /[\u0000-\u001f]/.test(next) ? "/chat" : next;
}

/** The button's text, e.g. "Sign in with Google". */
export function providerLabel(provider: OidcProvider): string {
  return `Sign in with ${provider.name.trim() || "single sign-on"}`;
}

/** Where the provider button goes: the server's login route, told where to come back to.
 * Null when the server offers no provider (or answered something unexpected). */
export function providerHref(providers: AuthProviders | undefined, next: string | null): string | null {
  const oidc = providers?.oidc;
  if (!oidc || typeof oidc.login_url !== "string" || !oidc.login_url.startsWith("/v1/auth/")) {
    return null;
  }
  return `${oidc.login_url}?next=${encodeURIComponent(safeNext(next))}`;
}
