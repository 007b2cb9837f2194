import { useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { useNavigate, useSearchParams } from "react-router-dom";
import { ApiError, apiJson, describeError } from "../api/client";
import { keys } from "../api/queries";
import type { User } from "../api/types";
import { type AuthProviders, providerHref, providerLabel, safeNext } from "./providers";

export function LoginPage() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<{ message: string; field: string | null } | null>(null);
  const [busy, setBusy] = useState(false);
  const providers = useQuery({
    queryKey: ["auth-providers"],
    queryFn: () => apiJson<AuthProviders>("/v1/auth/providers"),
    retry: false,
    staleTime: 300_000,
  });
  const ssoHref = providerHref(providers.data, params.get("next"));

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!username.trim() || !password) {
      setError({ message: "Enter your username and password.", field: username.trim() ? "password" : "username" });
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const answer = await apiJson<{ user: User }>("/v1/auth/login", {
        method: "POST",
        body: JSON.stringify({ username: username.trim(), password }),
      });
      queryClient.clear();
      queryClient.setQueryData(keys.me, answer.user);
      navigate(safeNext(params.get("next")), { replace: true });
    } catch (caught) {
      const field = caught instanceof ApiError ? caught.param : null;
      setError({ message: describeError(caught), field });
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <form className="login-card" onSubmit={submit} noValidate aria-describedby="login-error">
        <h1>
          <span className="logo" aria-hidden="true">◆</span> Atrium
        </h1>
        {params.get("expired") && !error && (
          <p className="notice" role="status">
            Your session has ended. Sign in again to continue where you were.
          </p>
        )}
        <label htmlFor="username">Username</label>
        <input
          id="username"
          name="username"
          autoComplete="username"
          autoFocus
          value={username}
          aria-invalid={error?.field === "username"}
          onChange={(e) => setUsername(e.target.value)}
        />
        <label htmlFor="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          aria-invalid={error?.field === "password" || (error !== null && error.field === null)}
          onChange={(e) => setPassword(e.target.value)}
        />
        <p id="login-error" className="error" role="alert" aria-live="assertive">
          {error?.message ?? ""}
        </p>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {ssoHref && providers.data?.oidc && (
          <>
            <p className="login-or" aria-hidden="true">or</p>
            {/* A full navigation, not a fetch: the provider's page takes over. */}
            <a className="button login-sso" href={ssoHref}>
              {providerLabel(providers.data.oidc)}
            </a>
          </>
        )}
      </form>
    </main>
  );
}
