import { describe, expect, it } from "vitest";
import type { UsageLine } from "./types";
import { formatUsage, isEmpty, lastDays, linesByDay, stacked, usageTable } from "./usage";

function line(model: string, requests: number, tokens: number, spend = 0): UsageLine {
  return {
    group: model, label: model, requests, errors: 0, prompt_tokens: tokens, completion_tokens: 0,
    total_tokens: tokens, spend_usd: spend,
  };
}

describe("lastDays", () => {
  it("ends with today's UTC date, oldest first, across a month end", () => {
    expect(lastDays(3, new Date("2026-03-01T23:30:00Z"))).toEqual(["2026-02-27", "2026-02-28", "2026-03-01"]);
  });
});

describe("usageTable", () => {
  const days = ["2026-11-27", "2026-11-28", "2026-11-29"];
  const perDay = new Map([
    ["2026-11-27", [line("smol", 2, 100)]],
    ["2026-11-29", [line("smol", 1, 10), line("big", 1, 900)]],
  ]);

  it("puts each model's numbers under its day, zero where it had none, biggest model first", () => {
    const table = usageTable(days, perDay, "total_tokens");
    expect(table.models).toEqual(["big", "smol"]);
    expect(table.values).toEqual([[0, 0, 900], [100, 0, 10]]);
    expect(table.totals).toEqual([100, 0, 910]);
  });

  it("uses the chosen metric", () => {
    const table = usageTable(days, perDay, "requests");
    expect(table.models).toEqual(["smol", "big"]);
    expect(table.totals).toEqual([2, 0, 2]);
  });

  it("ignores reports for days outside the window and is empty without usage", () => {
    const table = usageTable(days, new Map([["2026-01-01", [line("x", 1, 1)]]]), "requests");
    expect(table.models).toEqual([]);
    expect(isEmpty(table)).toBe(true);
    expect(isEmpty(usageTable(days, perDay, "requests"))).toBe(false);
  });

  it("stacks running sums tallest first", () => {
    const table = usageTable(days, perDay, "total_tokens");
    expect(stacked(table)).toEqual([[100, 0, 910], [0, 0, 900]]);
  });
});

describe("formatUsage", () => {
  it("formats money and counts", () => {
    expect(formatUsage("spend_usd", 0.01234)).toBe("$0.0123");
    expect(formatUsage("spend_usd", 12.5)).toBe("$12.50");
    expect(formatUsage("total_tokens", 12345)).toBe("12,345");
  });
});

describe("linesByDay", () => {
  it("groups a per-day report by its days, for usageTable", () => {
    const lines = [
      { ...line("key-a", 2, 20), day: "2026-11-28" },
      { ...line("key-b", 1, 5), day: "2026-11-29" },
      { ...line("key-a", 3, 30), day: "2026-11-29" },
      line("no-day", 9, 9),
    ];
    const perDay = linesByDay(lines);
    expect([...perDay.keys()]).toEqual(["2026-11-28", "2026-11-29"]);
    const table = usageTable(["2026-11-28", "2026-11-29"], perDay, "requests");
    expect(table.models).toEqual(["key-a", "key-b"]);
    expect(table.values).toEqual([[2, 3], [0, 1]]);
  });
});
