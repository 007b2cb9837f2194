import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { NavLink, Outlet, useNavigate } from "react-router-dom";
import { apiFetch, describeError } from "../api/client";
import { useMe } from "../api/queries";
import { useTheme } from "./theme";

export function Shell() {
  const me = useMe();
  const [theme, toggleTheme] = useTheme();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [error, setError] = useState<string | null>(null);

  async function logout() {
    try {
      await apiFetch("/v1/auth/logout", { method: "POST" });
    } catch (caught) {
      setError(describeError(caught));
      return;
    }
    queryClient.clear();
    navigate("/login", { replace: true });
  }

  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">
          <span className="logo" aria-hidden="true">◆</span> Atrium
        </span>
        <nav aria-label="Main">
          <NavLink to="/chat">Chat</NavLink>
          <NavLink to="/workflows">Workflows</NavLink>
          {me.data?.role === "admin" && <NavLink to="/admin">Admin</NavLink>}
        </nav>
        <div className="topbar-end">
          <button
            type="button"
            className="ghost"
            onClick={toggleTheme}
            aria-label={theme === "dark" ? "Switch to the light theme" : "Switch to the dark theme"}
          >
            {theme === "dark" ? "☀" : "☾"}
          </button>
          <span className="whoami" title={`Role: ${me.data?.role ?? ""}`}>
            {me.data?.display_name || me.data?.username}
          </span>
          <button type="button" className="ghost" onClick={logout}>
            Sign out
          </button>
        </div>
      </header>
      {error && (
        <p className="banner error" role="alert">
          {error}
        </p>
      )}
      <main id="main" className="content" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
