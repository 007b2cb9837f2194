/** Usage by model and day: the pure part of the usage chart (tested with Vitest). */
import type { UsageLine } from "./types";

export type UsageMetric = "total_tokens" | "requests" | "spend_usd";

export const METRIC_LABELS: Record<UsageMetric, string> = {
  total_tokens: "Tokens",
  requests: "Requests",
  spend_usd: "Spend (USD)",
};

/** What usage can be split by, besides the day (GET /v1/admin/usage?group_by=...). */
export type UsageGroup = "model" | "key" | "team" | "user";

export const GROUP_LABELS: Record<UsageGroup, string> = {
  model: "model",
  key: "API key",
  team: "team",
  user: "user",
};

/** A per-day report (`per_day=true`: each line has its day) as the day -> lines map
 * that `usageTable` takes. */
export function linesByDay(lines: UsageLine[]): Map<string, UsageLine[]> {
  const perDay = new Map<string, UsageLine[]>();
  for (const line of lines) {
    if (!line.day) continue;
    const day = perDay.get(line.day) ?? [];
    day.push(line);
    perDay.set(line.day, day);
  }
  return perDay;
}

/** The `n` calendar days (UTC, "YYYY-MM-DD") ending with `today`'s, oldest first. */
export function lastDays(n: number, today: Date): string[] {
  const end = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  return Array.from({ length: n }, (_, i) => new Date(end - (n - 1 - i) * 86_400_000).toISOString().slice(0, 10));
}

/** A day-by-model table: `values[m][d]` is model `models[m]`'s metric on `days[d]`. */
export interface UsageTable {
  days: string[];
  models: string[];
  values: number[][];
  /** Per day, all models together. */
  totals: number[];
}

/** Arranges per-day reports (each grouped by model) into a table; biggest model first. */
export function usageTable(days: string[], perDay: Map<string, UsageLine[]>, metric: UsageMetric): UsageTable {
  const byModel = new Map<string, number[]>();
  days.forEach((day, d) => {
    for (const line of perDay.get(day) ?? []) {
      const model = line.label || line.group;
      const row = byModel.get(model) ?? days.map(() => 0);
      row[d] += line[metric];
      byModel.set(model, row);
    }
  });
  const sum = (row: number[]) => row.reduce((a, b) => a + b, 0);
  const models = [...byModel.keys()].sort((a, b) => sum(byModel.get(b)!) - sum(byModel.get(a)!) || a.localeCompare(b));
  const values = models.map((m) => byModel.get(m)!);
  const totals = days.map((_, d) => values.reduce((acc, row) => acc + row[d], 0));
  return { days, models, values, totals };
}

/** Running sums for stacked bars, drawn tallest first so each smaller bar sits on top:
 * row 0 is every model together, the last row the first model alone. */
export function stacked(table: UsageTable): number[][] {
  const rows: number[][] = [];
  for (let upto = table.models.length; upto > 0; upto -= 1) {
    rows.push(table.days.map((_, d) => table.values.slice(0, upto).reduce((acc, row) => acc + row[d], 0)));
  }
  return rows;
}

/** Whether there is anything to draw. */
export function isEmpty(table: UsageTable): boolean {
  return table.totals.every((total) => total === 0);
}

/** A metric value for the table and the tooltip. */
export function formatUsage(metric: UsageMetric, value: number): string {
  if (metric === "spend_usd") return `$${value.toFixed(value < 1 ? 4 : 2)}`;
  return Math.round(value).toLocaleString("en-US");
}
