import { formatWhen, humanize } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useHealth, type HealthView } from "./queries";
import type { Alert } from "./types";

/** Probes, models, alerts and the event bus at a glance (refreshed every 10 s). */
export function HealthPage() {
  const health = useHealth();
  return (
    <>
      <PageHeader title="System health" />
      <QueryView query={health} what="system health">{(data) => <HealthDetail view={data} />}</QueryView>
    </>
  );
}

function HealthDetail({ view }: { view: HealthView }) {
  const { ready, alerts, streams } = view;
  const models = Object.entries(ready.models);
  return (
    <>
      <dl className="facts health-summary">
        <dt>Server</dt><dd><StatusBadge status={view.alive ? "ok" : "unhealthy"} /></dd>
        <dt>Ready</dt><dd><StatusBadge status={ready.status === "ready" ? "ready" : "not_ready"} /></dd>
        <dt>Store</dt><dd><StatusBadge status={ready.store === "ok" ? "ok" : "unreachable"} /></dd>
        <dt>Alerts firing</dt><dd>{alerts.firing.length}</dd>
      </dl>
      <h3>Models</h3>
      {models.length === 0 ? <p className="notice empty">No models configured.</p> : (
        <table className="data-table" aria-label="Model health">
          <thead><tr><th scope="col">Model</th><th scope="col">State</th><th scope="col">Detail</th></tr></thead>
          <tbody>
            {models.map(([name, h]) => (
              <tr key={name}>
                <td>{name}</td>
                <td><StatusBadge status={h.ready ? "ready" : "unhealthy"} /></td>
                <td>{h.detail || "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h3>Alerts</h3>
      <AlertTable alerts={[...alerts.firing, ...alerts.pending, ...alerts.resolved.slice(0, 20)]} />
      <h3>Event bus</h3>
      {streams.length === 0 ? <p className="notice empty">No event streams yet.</p> : (
        <div className="table-scroll">
          <table className="data-table compact" aria-label="Event streams">
            <thead>
              <tr>
                <th scope="col">Topic</th><th scope="col" className="num">Length</th><th scope="col">Group</th>
                <th scope="col" className="num">Consumers (live)</th><th scope="col" className="num">Pending</th>
                <th scope="col" className="num">Lag</th>
              </tr>
            </thead>
            <tbody>
              {streams.flatMap((stream) =>
                (stream.groups.length ? stream.groups : [null]).map((group, i) => (
                  <tr key={`${stream.topic}-${group?.name ?? i}`}>
                    <td>{i === 0 ? stream.topic : ""}</td>
                    <td className="num">{i === 0 ? stream.length : ""}</td>
                    <td>{group?.name ?? "—"}</td>
                    <td className="num">{group ? `${group.consumers} (${group.live_consumers})` : "—"}</td>
                    <td className="num">{group?.pending ?? "—"}</td>
                    <td className="num">{group ? (group.lag ?? "?") : "—"}</td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function AlertTable({ alerts }: { alerts: Alert[] }) {
  if (alerts.length === 0) return <p className="notice empty">No alerts: nothing is firing or pending.</p>;
  return (
    <table className="data-table" aria-label="Alerts">
      <thead>
        <tr>
          <th scope="col">Rule</th><th scope="col">State</th><th scope="col">Severity</th>
          <th scope="col">Summary</th><th scope="col">Since</th>
        </tr>
      </thead>
      <tbody>
        {alerts.map((alert) => (
          <tr key={`${alert.rule}-${alert.started_at}-${alert.state}`}>
            <td>{alert.rule}</td>
            <td><StatusBadge status={alert.state} /></td>
            <td>{humanize(alert.severity)}</td>
            <td>{alert.summary}</td>
            <td>{formatWhen(alert.resolved_at ?? alert.fired_at ?? alert.started_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
