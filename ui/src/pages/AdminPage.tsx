import { Suspense, lazy } from "react";

const AdminRoutes = lazy(() => import("../admin/AdminRoutes"));

/** The admin console, fetched the first time someone opens it. */
export function AdminPage() {
  return (
    <Suspense
      fallback={
        <p className="center-screen muted" role="status" aria-live="polite">
          <span className="spinner" aria-hidden="true" /> Loading the admin console…
        </p>
      }
    >
      <AdminRoutes />
    </Suspense>
  );
}
