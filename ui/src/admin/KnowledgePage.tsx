import { useState } from "react";
import { Link, useParams } from "react-router-dom";
import { describeError } from "../api/client";
import { formatWhen, syncSummary } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useKnowledgeBase, useKnowledgeBases, useResync, type KnowledgeBaseView } from "./queries";
import type { KnowledgeDocument, KnowledgeSource } from "./types";

export function KnowledgeBasesPage() {
  const kbs = useKnowledgeBases();
  return (
    <>
      <PageHeader title="Knowledge bases" />
      <QueryView
        query={kbs}
        what="knowledge bases"
        isEmpty={(d) => d.length === 0}
        empty={<p>No knowledge bases. Create one with <code>atrium kb create</code> or <code>POST /v1/knowledge-bases</code>.</p>}
      >
        {(data) => (
          <table className="data-table" aria-label="Knowledge bases">
            <thead>
              <tr><th scope="col">Name</th><th scope="col">Description</th><th scope="col">Embedder</th><th scope="col">Created</th></tr>
            </thead>
            <tbody>
              {data.map((kb) => (
                <tr key={kb.id}>
                  <td><Link to={`/admin/knowledge/${encodeURIComponent(kb.name)}`}>{kb.name}</Link></td>
                  <td>{kb.description || "—"}</td>
                  <td>{kb.embedder ?? "—"}</td>
                  <td>{formatWhen(kb.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </QueryView>
    </>
  );
}

export function KnowledgeBasePage() {
  const { name = "" } = useParams();
  const view = useKnowledgeBase(name);
  return (
    <>
      <p><Link to="/admin/knowledge">← All knowledge bases</Link></p>
      <QueryView query={view} what="the knowledge base">
        {(data) => <KnowledgeBaseDetail view={data} />}
      </QueryView>
    </>
  );
}

function KnowledgeBaseDetail({ view }: { view: KnowledgeBaseView }) {
  const { kb, sources, failed } = view;
  return (
    <>
      <PageHeader title={kb.name} />
      <dl className="facts">
        <dt>Documents</dt><dd>{kb.documents}</dd>
        <dt>Failed documents</dt><dd>{kb.failed_documents}</dd>
        <dt>Chunks</dt><dd>{kb.chunks}</dd>
        <dt>Embedder</dt><dd>{kb.embedder ?? "—"}</dd>
        <dt>Updated</dt><dd>{formatWhen(kb.updated_at)}</dd>
      </dl>
      <h3>Sources</h3>
      {sources.length === 0
        ? <p className="notice empty">No sources yet: add one, or upload documents.</p>
        : <SourceTable kb={kb.name} sources={sources} />}
      <h3>Failed documents</h3>
      {failed.length === 0
        ? <p className="notice empty">No failed documents.</p>
        : <FailedTable documents={failed} sources={sources} />}
    </>
  );
}

function SourceTable({ kb, sources }: { kb: string; sources: KnowledgeSource[] }) {
  const resync = useResync(kb);
  const [result, setResult] = useState<{ source: string; text: string; failed: boolean } | null>(null);
  function sync(source: KnowledgeSource) {
    setResult(null);
    resync.mutate(source.name, {
      onSuccess: (report) => setResult({ source: source.name, text: syncSummary(report), failed: false }),
      onError: (error) => setResult({ source: source.name, text: describeError(error), failed: true }),
    });
  }
  return (
    <div className="table-scroll">
      <table className="data-table" aria-label="Sources">
        <thead>
          <tr>
            <th scope="col">Source</th><th scope="col">Connector</th><th scope="col">Sync status</th>
            <th scope="col">Last sync</th><th scope="col" className="num">Documents</th>
            <th scope="col" className="num">Failed</th><th scope="col"><span className="visually-hidden">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {sources.map((source) => (
            <tr key={source.id} data-source={source.name}>
              <td>{source.name}</td>
              <td>{String(source.connector.kind ?? "—")}</td>
              <td>
                <StatusBadge status={source.status} />
                {source.last_error && <p className="error">{source.last_error}</p>}
              </td>
              <td>{formatWhen(source.last_sync_at)}</td>
              <td className="num">{source.documents}</td>
              <td className="num">{source.failed_documents}</td>
              <td>
                <button type="button" className="small" onClick={() => sync(source)}
                  disabled={resync.isPending} aria-label={`Re-sync ${source.name}`}>
                  {resync.isPending && resync.variables === source.name ? "Syncing…" : "Re-sync"}
                </button>
                {result?.source === source.name && (
                  <p className={result.failed ? "error" : "muted"} role={result.failed ? "alert" : "status"}>{result.text}</p>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function FailedTable({ documents, sources }: { documents: KnowledgeDocument[]; sources: KnowledgeSource[] }) {
  const sourceName = new Map(sources.map((s) => [s.id, s.name]));
  return (
    <div className="table-scroll">
      <table className="data-table" aria-label="Failed documents">
        <thead>
          <tr><th scope="col">Document</th><th scope="col">Source</th><th scope="col">Reason</th><th scope="col">Updated</th></tr>
        </thead>
        <tbody>
          {documents.map((doc) => (
            <tr key={doc.id} data-document={doc.key}>
              <td>{doc.title || doc.key}</td>
              <td>{sourceName.get(doc.source_id) ?? "—"}</td>
              <td className="reason">{doc.reason ?? "—"}</td>
              <td>{formatWhen(doc.updated_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
