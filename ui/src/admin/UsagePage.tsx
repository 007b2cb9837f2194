import { useMemo, useState } from "react";
import { PageHeader, QueryView } from "./parts";
import { useUsageByDay } from "./queries";
import {
  GROUP_LABELS, METRIC_LABELS, formatUsage, isEmpty, usageTable, type UsageGroup, type UsageMetric,
  type UsageTable,
} from "./usage";
import { UsageChart } from "./UsageChart";

const WINDOWS = [7, 14, 30] as const;

export function UsagePage() {
  const [days, setDays] = useState<number>(14);
  const [metric, setMetric] = useState<UsageMetric>("total_tokens");
  const [group, setGroup] = useState<UsageGroup>("model");
  const usage = useUsageByDay(group, days);
  return (
    <>
      <PageHeader title="Usage">
        <label htmlFor="usage-group">By</label>
        <select id="usage-group" value={group} onChange={(e) => setGroup(e.target.value as UsageGroup)}>
          {Object.entries(GROUP_LABELS).map(([value, label]) => <option key={value} value={value}>{label}</option>)}
        </select>
        <label htmlFor="usage-metric">Measure</label>
        <select id="usage-metric" value={metric} onChange={(e) => setMetric(e.target.value as UsageMetric)}>
          {Object.entries(METRIC_LABELS).map(([value, label]) => <option key={value} value={value}>{label}</option>)}
        </select>
        <label htmlFor="usage-window">Period</label>
        <select id="usage-window" value={days} onChange={(e) => setDays(Number(e.target.value))}>
          {WINDOWS.map((n) => <option key={n} value={n}>Last {n} days</option>)}
        </select>
      </PageHeader>
      <QueryView query={usage} what="usage">
        {(data) => <UsageView window={data.window} perDay={data.perDay} metric={metric} group={group} />}
      </QueryView>
    </>
  );
}

function UsageView({ window, perDay, metric, group }: {
  window: string[]; perDay: Parameters<typeof usageTable>[1]; metric: UsageMetric; group: UsageGroup;
}) {
  const table = useMemo(() => usageTable(window, perDay, metric), [window, perDay, metric]);
  if (isEmpty(table)) {
    return <p className="notice empty">No usage recorded in this period.</p>;
  }
  const by = GROUP_LABELS[group];
  return (
    <>
      <UsageChart table={table} metric={metric} label={`Usage by ${by} and day, stacked bars`} />
      <UsageTableView table={table} metric={metric} caption={`${METRIC_LABELS[metric]} by ${by} and day`} />
    </>
  );
}

function UsageTableView({ table, metric, caption }: { table: UsageTable; metric: UsageMetric; caption: string }) {
  const busyDays = table.days.map((day, d) => [day, d] as const).filter(([, d]) => table.totals[d] > 0);
  return (
    <div className="table-scroll">
      <table className="data-table compact" aria-label={caption}>
        <thead>
          <tr>
            <th scope="col">Day</th>
            {table.models.map((model) => <th key={model} scope="col" className="num">{model}</th>)}
            <th scope="col" className="num">Total</th>
          </tr>
        </thead>
        <tbody>
          {busyDays.map(([day, d]) => (
            <tr key={day}>
              <th scope="row">{day}</th>
              {table.models.map((model, m) => <td key={model} className="num">{formatUsage(metric, table.values[m][d])}</td>)}
              <td className="num">{formatUsage(metric, table.totals[d])}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
