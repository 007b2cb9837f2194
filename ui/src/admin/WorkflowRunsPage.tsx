import { useState, type ReactNode } from "react";
import { Link, useParams, useSearchParams } from "react-router-dom";
import { describeError } from "../api/client";
import { formatDuration, formatWhen, previewJson } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useWorkflowRun, useWorkflowRuns } from "./queries";
import type { WorkflowRun, WorkflowRunDetail, WorkflowRunNode } from "./types";

const STATUSES = ["", "pending", "running", "waiting", "succeeded", "failed", "cancelled"] as const;

export function WorkflowRunsPage() {
  const [params, setParams] = useSearchParams();
  const workflow = params.get("workflow") ?? "";
  const status = params.get("status") ?? "";
  const [typed, setTyped] = useState(workflow);
  const runs = useWorkflowRuns(workflow, status);
  function apply(next: { workflow?: string; status?: string }) {
    const merged = { workflow, status, ...next };
    const search = new URLSearchParams();
    if (merged.workflow) search.set("workflow", merged.workflow);
    if (merged.status) search.set("status", merged.status);
    setParams(search, { replace: true });
  }
  return (
    <>
      <PageHeader title="Workflow runs" />
      <form className="inline-form filters" role="search" aria-label="Filter runs"
        onSubmit={(e) => { e.preventDefault(); apply({ workflow: typed.trim() }); }}>
        <label htmlFor="runs-workflow">Workflow</label>
        <input id="runs-workflow" value={typed} onChange={(e) => setTyped(e.target.value)} placeholder="any" />
        <label htmlFor="runs-status">Status</label>
        <select id="runs-status" value={status} onChange={(e) => apply({ status: e.target.value })}>
          {STATUSES.map((s) => <option key={s} value={s}>{s ? s[0].toUpperCase() + s.slice(1) : "Any"}</option>)}
        </select>
        <button type="submit">Filter</button>
      </form>
      {runs.data && runs.isFetchNextPageError ? (
        // The pages already loaded stay; the pager says why no more came.
        <RunsTable runs={runs.data} pager={<MoreRuns listing={runs} />} />
      ) : (
        <QueryView query={runs} what="runs" isEmpty={(d) => d.length === 0}
          empty={<p>No runs{workflow || status ? " match these filters" : " yet"}.</p>}>
          {(data) => <RunsTable runs={data} pager={<MoreRuns listing={runs} />} />}
        </QueryView>
      )}
    </>
  );
}

function RunsTable({ runs, pager }: { runs: WorkflowRun[]; pager: ReactNode }) {
  return (
    <>
      <div className="table-scroll">
        <table className="data-table" aria-label="Workflow runs">
          <thead>
            <tr>
              <th scope="col">Run</th><th scope="col">Workflow</th><th scope="col">Status</th>
              <th scope="col">Trigger</th><th scope="col">Started</th><th scope="col" className="num">Duration</th>
              <th scope="col" className="num">Tokens</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((run) => (
              <tr key={run.id}>
                <td><Link to={`/admin/runs/${encodeURIComponent(run.id)}`} aria-label={`Open run ${run.id}`}><code>{run.id.slice(0, 12)}</code></Link></td>
                <td>{run.workflow} <span className="muted">v{run.version}</span></td>
                <td><StatusBadge status={run.status} /></td>
                <td>{run.trigger ?? "—"}</td>
                <td>{formatWhen(run.created_at)}</td>
                <td className="num">{run.finished_at ? formatDuration(seconds(run.created_at, run.finished_at)) : "—"}</td>
                <td className="num">{run.tokens}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {pager}
    </>
  );
}

/** How many runs are shown, and "Load more" while older ones follow. */
function MoreRuns({ listing }: { listing: ReturnType<typeof useWorkflowRuns> }) {
  const count = listing.data?.length ?? 0;
  return (
    <nav className="pager" aria-label="More runs">
      <span className="muted" role="status" aria-live="polite">
        {count} run{count === 1 ? "" : "s"}{listing.hasNextPage ? ", older ones follow" : ", all shown"}
      </span>
      {listing.hasNextPage && (
        <button type="button" onClick={() => void listing.fetchNextPage()} disabled={listing.isFetchingNextPage}>
          {listing.isFetchingNextPage ? "Loading…" : "Load more"}
        </button>
      )}
      {listing.isFetchNextPageError && (
        <span className="error" role="alert">Could not load more runs: {describeError(listing.error)}</span>
      )}
    </nav>
  );
}

function seconds(from: string, to: string): number {
  return (Date.parse(to) - Date.parse(from)) / 1000;
}

export function WorkflowRunPage() {
  const { runId = "" } = useParams();
  const run = useWorkflowRun(runId);
  return (
    <>
      <p><Link to="/admin/runs">← All runs</Link></p>
      <QueryView query={run} what="the run">{(data) => <RunTrace run={data} />}</QueryView>
    </>
  );
}

function RunTrace({ run }: { run: WorkflowRunDetail }) {
  return (
    <>
      <PageHeader title={`Run of ${run.workflow}`}><StatusBadge status={run.status} /></PageHeader>
      <dl className="facts">
        <dt>Run</dt><dd><code>{run.id}</code></dd>
        <dt>Version</dt><dd>{run.version}</dd>
        <dt>Started</dt><dd>{formatWhen(run.created_at)}</dd>
        <dt>Finished</dt><dd>{formatWhen(run.finished_at)}</dd>
        <dt>Tokens</dt><dd>{run.tokens}</dd>
        <dt>Cost</dt><dd>${run.cost_usd.toFixed(4)}</dd>
        {run.parent_run_id && <><dt>Parent run</dt><dd><Link to={`/admin/runs/${run.parent_run_id}`}>{run.parent_run_id}</Link></dd></>}
      </dl>
      {run.error && <p className="notice error" role="alert">{run.error}</p>}
      <h3>Inputs</h3>
      <pre className="json">{previewJson(run.inputs, 4000)}</pre>
      <h3>Blocks</h3>
      {run.nodes.length === 0 ? <p className="notice empty">No block has started yet.</p> : (
        <ol className="trace">
          {run.nodes.map((node) => <NodeTrace key={node.node_id} node={node} />)}
        </ol>
      )}
      <h3>Outputs</h3>
      <pre className="json">{previewJson(run.outputs, 4000)}</pre>
    </>
  );
}

function NodeTrace({ node }: { node: WorkflowRunNode }) {
  return (
    <li className="trace-node" data-node={node.node_id}>
      <details open={node.status === "failed"}>
        <summary>
          <strong>{node.node_id}</strong> <span className="muted">{node.block_type}</span>{" "}
          <StatusBadge status={node.status} />{" "}
          <span className="muted">
            {node.duration_ms !== null ? formatDuration(node.duration_ms / 1000) : "—"}
            {node.tokens ? ` · ${node.tokens} tokens` : ""}
            {node.attempts > 1 ? ` · ${node.attempts} attempts` : ""}
          </span>
        </summary>
        {node.error && <p className="error">{node.error}</p>}
        <div className="trace-io">
          <div><h4>Inputs</h4><pre className="json">{previewJson(node.inputs)}</pre></div>
          <div><h4>Outputs</h4><pre className="json">{previewJson(node.outputs)}</pre></div>
        </div>
      </details>
    </li>
  );
}
