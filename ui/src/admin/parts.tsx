/** Small building blocks shared by the admin screens: loading, error and empty states. */
import type { UseQueryResult } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { describeError } from "../api/client";
import { humanize } from "./format";

/** Renders a query's data, or its loading / error / empty state (never a blank screen). */
export function QueryView<T>({
  query, what, empty, isEmpty, children,
}: {
  query: UseQueryResult<T>;
  what: string;
  empty?: ReactNode;
  isEmpty?: (data: T) => boolean;
  children: (data: T) => ReactNode;
}) {
  if (query.isPending) {
    return (
      <p className="muted" role="status" aria-live="polite">
        <span className="spinner" aria-hidden="true" /> Loading {what}…
      </p>
    );
  }
  if (query.isError) {
    return (
      <div className="notice error" role="alert">
        <p>Could not load {what}: {describeError(query.error)}</p>
        <button type="button" onClick={() => query.refetch()}>Try again</button>
      </div>
    );
  }
  if (isEmpty?.(query.data)) return <div className="notice empty">{empty}</div>;
  return <>{children(query.data)}</>;
}

const TONES: Record<string, string> = {
  running: "info", starting: "info", restarting: "warn", paused: "warn", draining: "warn",
  succeeded: "ok", promoted: "ok", ready: "ok", finished: "ok", stopped: "muted",
  failed: "bad", rolled_back: "bad", aborted: "bad", unhealthy: "bad", revoked: "bad", active: "ok",
  disabled: "bad", ok: "ok", indexed: "ok", syncing: "info", never: "muted", pending: "info", waiting: "warn",
  cancelled: "muted", skipped: "muted", firing: "bad", resolved: "ok", success: "ok", denied: "bad", rejected: "warn", error: "bad",
  not_ready: "bad", unreachable: "bad",
};

/** A status as a coloured label with its words (the colour is never the only cue). */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge ${TONES[status] ?? "muted"}`}>{humanize(status)}</span>;
}

/** A page heading with optional actions on the right. */
export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="page-header">
      <h2>{title}</h2>
      {children && <div className="page-actions">{children}</div>}
    </div>
  );
}

/** A labelled form control with its error beside it (announced, and tied to the control
 * with aria-describedby by the caller through `errorId`). */
export function Field({
  id, label, error, hint, children,
}: {
  id: string;
  label: string;
  error?: string | null;
  hint?: string;
  children: ReactNode;
}) {
  return (
    <div className={`field${error ? " invalid" : ""}`}>
      <label htmlFor={id}>{label}</label>
      {children}
      {hint && !error && <small className="muted" id={`${id}-hint`}>{hint}</small>}
      {error && <small className="field-error error" id={errorId(id)} role="alert">{error}</small>}
    </div>
  );
}

/** The id of a field's error message, for the control's aria-describedby. */
export function errorId(id: string): string {
  return `${id}-error`;
}

/** aria attributes of a control whose field may show an error. */
export function invalidProps(id: string, error: string | null | undefined) {
  return error ? { "aria-invalid": true as const, "aria-describedby": errorId(id) } : {};
}
