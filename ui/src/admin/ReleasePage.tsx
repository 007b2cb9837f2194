import { Link, useParams } from "react-router-dom";
import { describeError } from "../api/client";
import { RELEASE_ACTIONS, actionBlocked, formatDuration, formatWhen, humanize, isEnded, timelineRows } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useRelease, useReleaseAction } from "./queries";
import type { Release, ReleaseAction } from "./types";

const ACTION_LABELS: Record<ReleaseAction, string> = {
  pause: "Pause", resume: "Resume", promote: "Promote", approve: "Approve", rollback: "Roll back", abort: "Abort",
};
const DESTRUCTIVE = new Set<ReleaseAction>(["rollback", "abort"]);

export function ReleasePage() {
  const { releaseId = "" } = useParams();
  const release = useRelease(releaseId);
  return (
    <>
      <p><Link to="/admin/releases">← All releases</Link></p>
      <QueryView query={release} what="the release">
        {(data) => <ReleaseDetail release={data} />}
      </QueryView>
    </>
  );
}

function ReleaseDetail({ release }: { release: Release }) {
  return (
    <>
      <PageHeader title={`${release.model} v${release.version ?? "?"}`}>
        <StatusBadge status={release.status} />
      </PageHeader>
      <dl className="facts">
        <dt>Release</dt><dd><code>{release.id}</code></dd>
        <dt>Stage</dt><dd data-testid="release-stage">{humanize(release.stage)}</dd>
        <dt>Canary weight</dt><dd>{release.weight}%</dd>
        <dt>Source</dt><dd>{release.source}{release.release_id ? ` (${release.release_id})` : ""}</dd>
        <dt>Started</dt><dd>{formatWhen(release.created_at)}</dd>
        {release.seconds_to_production !== null && (
          <><dt>Detection to production</dt><dd>{formatDuration(release.seconds_to_production)}</dd></>
        )}
        {release.reason && <><dt>Reason</dt><dd>{release.reason}</dd></>}
      </dl>
      <ReleaseActions release={release} />
      <h3>Timeline</h3>
      <Timeline release={release} />
    </>
  );
}

function ReleaseActions({ release }: { release: Release }) {
  const action = useReleaseAction(release.id);
  const ended = isEnded(release.status);
  function run(name: ReleaseAction) {
    if (DESTRUCTIVE.has(name) && !window.confirm(`${ACTION_LABELS[name]} release ${release.id}?`)) return;
    action.mutate(name);
  }
  return (
    <div className="release-actions" role="group" aria-label="Release actions">
      {RELEASE_ACTIONS.map((name) => {
        const blocked = actionBlocked(release, name);
        return (
          <button
            key={name}
            type="button"
            className={DESTRUCTIVE.has(name) ? "danger" : undefined}
            // An ended release keeps its buttons so the server can say why nothing happens.
            disabled={action.isPending || (!ended && blocked !== null)}
            title={blocked ?? undefined}
            onClick={() => run(name)}
          >
            {ACTION_LABELS[name]}
          </button>
        );
      })}
      <p className="action-result" role="status" aria-live="polite">
        {action.isPending && "Sending…"}
        {action.isSuccess && `${ACTION_LABELS[action.variables]} requested.`}
      </p>
      {action.isError && (
        <p className="error" role="alert" data-testid="action-error">
          {describeError(action.error)}
        </p>
      )}
    </div>
  );
}

function Timeline({ release }: { release: Release }) {
  const rows = timelineRows(release.timeline);
  if (rows.length === 0) return <p className="notice empty">Nothing recorded yet.</p>;
  return (
    <ol className="timeline" aria-label="Release timeline">
      {rows.map((row) => (
        <li key={row.key}>
          <div className="timeline-head">
            <strong>{row.stage}</strong> <StatusBadge status={row.status} />
            <time dateTime={row.at.toISOString()}>{row.at.toLocaleTimeString()}</time>
            {row.after && <span className="muted">{row.after}</span>}
          </div>
          {row.event && <p className="timeline-event">{row.event}</p>}
          {row.reasons.length > 0 && (
            <ul className="reasons">
              {row.reasons.map((reason) => <li key={reason}>{reason}</li>)}
            </ul>
          )}
          {row.metrics.length > 0 && (
            <details>
              <summary>Metrics ({row.metrics.length})</summary>
              <table className="data-table compact">
                <tbody>
                  {row.metrics.map(([name, value]) => (
                    <tr key={name}><th scope="row">{name}</th><td className="num">{value}</td></tr>
                  ))}
                </tbody>
              </table>
            </details>
          )}
        </li>
      ))}
    </ol>
  );
}
