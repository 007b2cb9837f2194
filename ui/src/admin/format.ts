/** Pure formatting and decisions for the admin console (tested with Vitest). */
import type { Release, ReleaseAction, TimelineEntry } from "./types";

const ENDED = new Set(["succeeded", "failed", "rolled_back", "aborted"]);

/** Whether a release has finished (nothing can steer it any more). */
export function isEnded(status: string): boolean {
  return ENDED.has(status);
}

/** "smoke_testing" -> "Smoke testing". */
export function humanize(name: string): string {
  const words = name.replace(/[_-]+/g, " ").trim();
  return words ? words[0].toUpperCase() + words.slice(1) : "";
}

/** A duration as people read it: "850 ms", "42 s", "3 min 5 s", "2 h 4 min". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const total = Math.round(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours > 0) return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

/** A metric's value for a table cell: rounded numbers, units from the key's suffix. */
export function formatMetric(key: string, value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") {
    const rounded = Number.isInteger(value) ? String(value) : value.toFixed(value < 1 ? 3 : 1);
    if (key.endsWith("_ms")) return `${rounded} ms`;
    if (key.endsWith("_rate") || key.endsWith("_ratio")) return rounded;
    return rounded;
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** One line of a release's timeline, ready to show. */
export interface TimelineRow {
  key: string;
  stage: string;
  status: string;
  at: Date;
  /** Time since the previous line ("+12 s"), or null for the first. */
  after: string | null;
  event: string | null;
  reasons: string[];
  metrics: [string, string][];
}

/** Flattens a metrics object ({canary: {p95_ms: 1}} -> ["canary p95_ms", "1 ms"]). */
export function flattenMetrics(metrics: Record<string, unknown> | undefined, prefix = ""): [string, string][] {
  if (!metrics) return [];
  return Object.entries(metrics).flatMap(([key, value]): [string, string][] => {
    const name = prefix ? `${prefix} ${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return flattenMetrics(value as Record<string, unknown>, name);
    }
    return [[name, formatMetric(key, value)]];
  });
}

/** A release's timeline as rows, oldest first, each with the time since the one before. */
export function timelineRows(entries: TimelineEntry[]): TimelineRow[] {
  return entries.map((entry, index) => {
    const at = new Date(entry.at);
    const previous = index > 0 ? new Date(entries[index - 1].at) : null;
    const gap = previous ? (at.getTime() - previous.getTime()) / 1000 : null;
    return {
      key: `${index}-${entry.at}`,
      stage: humanize(entry.stage),
      status: entry.status,
      at,
      after: gap === null ? null : `+${formatDuration(gap)}`,
      event: typeof entry.event === "string" ? entry.event : null,
      reasons: Array.isArray(entry.reasons) ? entry.reasons.map(String) : [],
      metrics: flattenMetrics(entry.metrics),
    };
  });
}

/** The operator actions, in the order shown. */
export const RELEASE_ACTIONS: ReleaseAction[] = ["pause", "resume", "promote", "approve", "rollback", "abort"];

/** Why an action is not offered now, or null when it is. */
export function actionBlocked(release: Pick<Release, "status" | "stage">, action: ReleaseAction): string | null {
  if (isEnded(release.status)) return `The release has ended (${humanize(release.status).toLowerCase()}).`;
  if (action === "pause" && release.status === "paused") return "Already paused.";
  if (action === "resume" && release.status !== "paused") return "Only a paused release resumes.";
  if (action === "approve" && release.stage !== "awaiting_approval") return "Not waiting for approval.";
  return null;
}

/** "2026-11-29T10:00:00+00:00" or epoch seconds -> a short local date and time. */
export function formatWhen(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** Bytes as "1.2 GB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A knowledge-base sync report in a sentence: "Synced: 3 added, 1 failed." */
export function syncSummary(report: Record<string, unknown>): string {
  const parts = ["added", "updated", "unchanged", "deleted", "failed"]
    .map((key) => [key, report[key]] as const)
    .filter(([, value]) => typeof value === "number" || Array.isArray(value))
    .map(([key, value]) => `${Array.isArray(value) ? value.length : String(value)} ${key}`);
  const counts = parts.length ? `: ${parts.join(", ")}` : "";
  const error = typeof report.error === "string" && report.error ? ` The sync failed: ${report.error}` : "";
  return `Synced${counts}.${error}`;
}

/** A block's inputs or outputs for a trace: compact JSON, long values cut at `max`. */
export function previewJson(value: unknown, max = 400): string {
  if (value === null || value === undefined) return "—";
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 1);
  return text.length > max ? `${text.slice(0, max)}… (${text.length - max} more characters)` : text;
}
