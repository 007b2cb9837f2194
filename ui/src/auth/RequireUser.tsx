import type { ReactNode } from "react";
import { Navigate, useLocation } from "react-router-dom";
import { ApiError, SessionExpiredError, describeError } from "../api/client";
import { useMe } from "../api/queries";

/** Renders its children for a signed-in user; otherwise sends them to sign in. */
export function RequireUser({ children }: { children: ReactNode }) {
  const me = useMe();
  const location = useLocation();
  if (me.isPending) {
    return (
      <div className="center-screen" role="status" aria-live="polite">
        <span className="spinner" aria-hidden="true" /> Loading Atrium…
      </div>
    );
  }
  // No session, an expired one, or a disabled account: sign in (again).
  if (me.error instanceof SessionExpiredError || (me.error instanceof ApiError && me.error.status === 403)) {
    const next = location.pathname + location.search;
    return <Navigate to={`/login?next=${encodeURIComponent(next)}`} replace />;
  }
  if (me.error) {
    return (
      <div className="center-screen" role="alert">
        <p>Atrium could not load your account: {describeError(me.error)}</p>
        <button type="button" onClick={() => me.refetch()}>
          Try again
        </button>
      </div>
    );
  }
  return <>{children}</>;
}
