import { Suspense, lazy } from "react";

const Builder = lazy(() => import("../workflows/Builder"));

/** The workflow builder, fetched the first time someone opens it. */
export function WorkflowsPage() {
  return (
    <Suspense
      fallback={
        <p className="center-screen muted" role="status" aria-live="polite">
          <span className="spinner" aria-hidden="true" /> Loading the workflow builder…
        </p>
      }
    >
      <Builder />
    </Suspense>
  );
}
