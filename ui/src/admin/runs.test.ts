import { describe, expect, it } from "vitest";
import { loadedRuns, nextRunsCursor, runsPath, type RunsPage } from "./runs";
import type { WorkflowRun } from "./types";

const run = (id: string) => ({ id, status: "succeeded" }) as WorkflowRun;
const page = (ids: string[], hasMore: boolean): RunsPage => ({
  object: "list",
  data: ids.map(run),
  first_id: ids[0] ?? null,
  last_id: ids[ids.length - 1] ?? null,
  has_more: hasMore,
});

describe("runs paging", () => {
  it("asks for the newest page, then the page before a run, with the filters", () => {
    expect(runsPath({ workflow: "", status: "" }, "")).toBe("/v1/workflows/runs?limit=50");
    const next = new URL(runsPath({ workflow: "desk note", status: "failed" }, "run_9", 2), "http://x");
    expect(Object.fromEntries(next.searchParams)).toEqual({
      limit: "2", workflow: "desk note", status: "failed", before: "run_9",
    });
  });

  it("pages on from the last run while the server says more follow", () => {
    expect(nextRunsCursor(page(["c", "b"], true))).toBe("b");
    expect(nextRunsCursor(page(["a"], false))).toBeUndefined();
    expect(nextRunsCursor(page([], false))).toBeUndefined();
  });

  it("shows the loaded pages in order, each run once", () => {
    const shown = loadedRuns([page(["e", "d"], true), page(["d", "c"], true), page(["b"], false)]);
    expect(shown.map((r) => r.id)).toEqual(["e", "d", "c", "b"]);
  });
});
