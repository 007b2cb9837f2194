/** Paging through workflow runs: GET /v1/workflows/runs answers a page in OpenAI's list
 * shape, and the next (older) page starts before the last run of this one. */
import type { WorkflowRun } from "./types";

/** Runs a page of the admin console asks for. */
export const RUNS_PAGE = 50;

/** One answer of GET /v1/workflows/runs. */
export interface RunsPage {
  object: "list";
  data: WorkflowRun[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
}

/** The filters the runs page holds (blank: any). */
export interface RunsFilter {
  workflow: string;
  status: string;
}

/** The request for the page of runs older than ``before`` (blank: the newest page). */
export function runsPath(filter: RunsFilter, before: string, limit = RUNS_PAGE): string {
  const params = new URLSearchParams({ limit: String(limit) });
  if (filter.workflow) params.set("workflow", filter.workflow);
  if (filter.status) params.set("status", filter.status);
  if (before) params.set("before", before);
  return `/v1/workflows/runs?${params}`;
}

/** The cursor of the page after ``page``; undefined when it was the last. */
export function nextRunsCursor(page: RunsPage): string | undefined {
  return page.has_more && page.last_id ? page.last_id : undefined;
}

/** Every run of the pages loaded so far, in order, each once (a run that moved to a
 * later page between two fetches is not shown twice). */
export function loadedRuns(pages: RunsPage[]): WorkflowRun[] {
  const seen = new Set<string>();
  return pages.flatMap((page) => page.data).filter((run) => {
    if (seen.has(run.id)) return false;
    seen.add(run.id);
    return true;
  });
}
