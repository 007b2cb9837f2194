import { describe, expect, it } from "vitest";
import {
  actionBlocked, flattenMetrics, formatBytes, formatDuration, humanize, previewJson, syncSummary, timelineRows,
} from "./format";

describe("formatDuration", () => {
  it.each([
    [0.25, "250 ms"],
    [42.4, "42 s"],
    [185, "3 min 5 s"],
    [120, "2 min"],
    [7440, "2 h 4 min"],
    [3600, "1 h"],
    [-1, "—"],
  ])("%s s reads %s", (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe("timelineRows", () => {
  it("shows each stage with the time since the line before, its event, reasons and metrics", () => {
    const rows = timelineRows([
      { stage: "detected", status: "running", at: "2026-11-29T10:00:00+00:00" },
      { stage: "smoke_testing", status: "running", at: "2026-11-29T10:00:12.500+00:00" },
      {
        stage: "canary", status: "running", at: "2026-11-29T10:03:12.500+00:00",
        event: "analysis at 5%: fail", reasons: ["error rate 0.5 > 0.05"],
        metrics: { canary: { error_rate: 0.5, p95_latency_ms: 123.456 }, requests: 10 },
      },
    ]);
    expect(rows.map((r) => r.stage)).toEqual(["Detected", "Smoke testing", "Canary"]);
    expect(rows.map((r) => r.after)).toEqual([null, "+13 s", "+3 min"]);
    expect(rows[2].event).toBe("analysis at 5%: fail");
    expect(rows[2].reasons).toEqual(["error rate 0.5 > 0.05"]);
    expect(rows[2].metrics).toEqual([
      ["canary error_rate", "0.500"],
      ["canary p95_latency_ms", "123.5 ms"],
      ["requests", "10"],
    ]);
    expect(rows[0].event).toBeNull();
  });
});

describe("actionBlocked", () => {
  it("offers nothing once a release has ended", () => {
    expect(actionBlocked({ status: "succeeded", stage: "promoted" }, "pause")).toMatch(/has ended/);
  });
  it("offers resume only when paused and approve only when waiting for it", () => {
    expect(actionBlocked({ status: "running", stage: "canary" }, "resume")).not.toBeNull();
    expect(actionBlocked({ status: "paused", stage: "canary" }, "resume")).toBeNull();
    expect(actionBlocked({ status: "paused", stage: "canary" }, "pause")).not.toBeNull();
    expect(actionBlocked({ status: "running", stage: "canary" }, "approve")).not.toBeNull();
    expect(actionBlocked({ status: "running", stage: "awaiting_approval" }, "approve")).toBeNull();
    expect(actionBlocked({ status: "running", stage: "canary" }, "rollback")).toBeNull();
  });
});

describe("small formatters", () => {
  it("humanizes names and sizes", () => {
    expect(humanize("rolled_back")).toBe("Rolled back");
    expect(formatBytes(1_234_567)).toBe("1.2 MB");
    expect(formatBytes(512)).toBe("512 B");
    expect(flattenMetrics(undefined)).toEqual([]);
  });
});

describe("syncSummary", () => {
  it("counts what a sync did, failed documents included", () => {
    const report = { added: 2, updated: 0, unchanged: 5, deleted: 0, failed: [{ key: "a.pdf", reason: "bad" }], error: null };
    expect(syncSummary(report)).toBe("Synced: 2 added, 0 updated, 5 unchanged, 0 deleted, 1 failed.");
  });
  it("says when the sync itself failed", () => {
    expect(syncSummary({ error: "folder not found" })).toBe("Synced. The sync failed: folder not found");
  });
});

describe("previewJson", () => {
  it("shows nothing as a dash, text as it is and cuts long values", () => {
    expect(previewJson(null)).toBe("—");
    expect(previewJson("hi")).toBe("hi");
    expect(previewJson({ a: "x".repeat(50) }, 10)).toMatch(/^\{\n "a": "x… \(\d+ more characters\)$/);
  });
});
