/** A workflow's published versions, and what changed between any two (or the draft). */
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { describeError } from "../api/client";
import { fetchDiff, fetchVersion, fetchVersions } from "./api";
import type { VersionDiff, WorkflowDefinition } from "./types";

interface Props {
  name: string;
  exists: boolean;
  /** Changes when a version is published, so the list is read again. */
  publishedVersion: number | null;
  onRestore: (definition: WorkflowDefinition, version: number) => void;
  onClose: () => void;
}

const DRAFT = "draft";
const asVersion = (value: string) => (value === DRAFT ? null : Number(value));

export function VersionsPanel({ name, exists, publishedVersion, onRestore, onClose }: Props) {
  const versions = useQuery({
    queryKey: ["workflows", "versions", name, publishedVersion],
    queryFn: () => fetchVersions(name),
    enabled: exists,
  });
  const list = versions.data ?? [];
  const [from, setFrom] = useState<string | null>(null);
  const [to, setTo] = useState<string | null>(null);
  const [diff, setDiff] = useState<VersionDiff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const fromValue = from ?? (list[1] ? String(list[1].version) : DRAFT);
  const toValue = to ?? (list[0] ? String(list[0].version) : DRAFT);

  async function compare() {
    setError(null);
    try {
      setDiff(await fetchDiff(name, asVersion(fromValue), asVersion(toValue)));
    } catch (caught) {
      setDiff(null);
      setError(describeError(caught));
    }
  }

  async function restore(version: number) {
    setError(null);
    try {
      onRestore((await fetchVersion(name, version)).definition, version);
    } catch (caught) {
      setError(describeError(caught));
    }
  }

  const choices = [
    ...list.map((v) => <option key={v.version} value={String(v.version)}>v{v.version}</option>),
    <option key={DRAFT} value={DRAFT}>Saved draft</option>,
  ];
  return (
    <section className="wf-panel" aria-label="Version history">
      <h2>Versions <button type="button" className="link" onClick={onClose}>Close</button></h2>
      {!exists && <p className="muted">Save or publish the workflow to start its history.</p>}
      {versions.isError && <p className="error" role="alert">{describeError(versions.error)}</p>}
      {exists && !versions.isPending && list.length === 0 && <p className="muted">Nothing published yet.</p>}
      {list.length > 0 && (
        <ol className="wf-versions" aria-label="Published versions">
          {list.map((v) => (
            <li key={v.version} data-version={v.version}>
              <strong>v{v.version}</strong>{v.version === publishedVersion && <> · <em>live</em></>}{" "}
              <span className="muted">{new Date(v.created_at).toLocaleString()}{v.note && ` · ${v.note}`}</span>{" "}
              <button type="button" className="link" onClick={() => void restore(v.version)}>Open in the canvas</button>
            </li>
          ))}
        </ol>
      )}
      {exists && (
        <form aria-label="Compare versions" onSubmit={(event) => { event.preventDefault(); void compare(); }}>
          <label htmlFor="wf-diff-from">From</label>
          <select id="wf-diff-from" value={fromValue} onChange={(e) => setFrom(e.target.value)}>{choices}</select>
          <label htmlFor="wf-diff-to">To</label>
          <select id="wf-diff-to" value={toValue} onChange={(e) => setTo(e.target.value)}>{choices}</select>
          <button type="submit">Compare</button>
        </form>
      )}
      {error && <p className="error" role="alert">{error}</p>}
      {diff && <DiffView diff={diff} />}
    </section>
  );
}

function DiffView({ diff }: { diff: VersionDiff }) {
  const label = (v: number | null) => (v === null ? "the draft" : `v${v}`);
  const rows: [string, string[]][] = [
    ["Blocks added", diff.nodes_added],
    ["Blocks removed", diff.nodes_removed],
    ["Blocks changed", Object.entries(diff.nodes_changed).map(([id, fields]) => `${id} (${fields.join(", ")})`)],
    ["Edges added", diff.edges_added],
    ["Edges removed", diff.edges_removed],
    ["Workflow fields changed", diff.fields_changed],
  ];
  const any = rows.some(([, items]) => items.length);
  return (
    <section aria-label="Differences" className="wf-diff">
      <h3>From {label(diff.from)} to {label(diff.to)}</h3>
      {!any && <p className="muted" data-testid="diff-none">No differences.</p>}
      <dl data-testid="diff-summary">
        {rows.filter(([, items]) => items.length).map(([title, items]) => (
          <div key={title}><dt>{title}</dt><dd>{items.join("; ")}</dd></div>
        ))}
      </dl>
      {diff.unified && <pre className="mono wf-unified" data-testid="diff-unified">{diff.unified}</pre>}
    </section>
  );
}
