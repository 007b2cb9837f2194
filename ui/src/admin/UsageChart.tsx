import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { formatUsage, stacked, type UsageMetric, type UsageTable } from "./usage";

const PALETTE = ["#3651d4", "#e07a1f", "#2a9d5c", "#c0392b", "#8e44ad", "#16a3b8", "#b8860b", "#6c757d"];

/** Stacked bars per day, one colour per group (uPlot on a canvas; the table below carries
 * the same numbers for screen readers). */
export function UsageChart({ table, metric, label }: { table: UsageTable; metric: UsageMetric; label: string }) {
  const holder = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = holder.current;
    if (!element) return;
    const xs = table.days.map((day) => Date.parse(`${day}T00:00:00Z`) / 1000);
    const rows = stacked(table);
    // Row k stacks the first (n - k) models: it is drawn for model n - 1 - k.
    const modelOf = (k: number) => table.models.length - 1 - k;
    const bars = uPlot.paths.bars!({ size: [0.7, 60] });
    const text = getComputedStyle(element).color;
    const plot = new uPlot(
      {
        width: Math.max(320, element.clientWidth),
        height: 280,
        // Half a day either side, so the first and last bars are whole.
        scales: { x: { time: true, range: (_u, min, max) => [min - 43_200, max + 43_200] } },
        axes: [{ stroke: text }, { stroke: text, values: (_, ticks) => ticks.map((t) => formatUsage(metric, t)) }],
        series: [
          { label: "Day", value: (_, ts) => (ts == null ? "—" : new Date(ts * 1000).toISOString().slice(0, 10)) },
          ...rows.map((_, k) => {
            const m = modelOf(k);
            const color = PALETTE[m % PALETTE.length];
            return {
              label: table.models[m],
              fill: color,
              stroke: color,
              paths: bars,
              points: { show: false },
              value: (_u: uPlot, _v: number | null, _s: number, index: number | null) =>
                index == null ? "—" : formatUsage(metric, table.values[m][index]),
            };
          }),
        ],
      },
      [xs, ...rows],
      element,
    );
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(320, element.clientWidth), height: 280 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [table, metric]);
  return <div ref={holder} className="usage-chart" role="img" aria-label={label} />;
}
