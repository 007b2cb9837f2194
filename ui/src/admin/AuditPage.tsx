import { useState, type FormEvent } from "react";
import { formatWhen } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { AUDIT_PAGE, useAudit, useKeyNames, type AuditQuery } from "./queries";
import type { AuditEntry } from "./types";

const NO_FILTER: AuditQuery = { actor: "", action: "", since: "", until: "", before: 0 };

/** Every admin action, newest first, with filters and paging to older entries. */
export function AuditPage() {
  const [filter, setFilter] = useState<AuditQuery>(NO_FILTER);
  const [draft, setDraft] = useState<AuditQuery>(NO_FILTER);
  const [pages, setPages] = useState<number[]>([]);
  const audit = useAudit(filter);
  const names = useKeyNames();
  const [problem, setProblem] = useState<string | null>(null);

  function submit(event: FormEvent) {
    event.preventDefault();
    if (draft.since && draft.until && draft.since >= draft.until) {
      setProblem("“From” must be before “to”.");
      return;
    }
    setProblem(null);
    setPages([]);
    setFilter({ ...draft, actor: draft.actor.trim(), action: draft.action.trim(), before: 0 });
  }
  const set = (field: keyof Omit<AuditQuery, "before">) => (value: string) => setDraft((d) => ({ ...d, [field]: value }));
  const older = (entries: AuditEntry[]) => {
    setPages((p) => [...p, filter.before]);
    setFilter((f) => ({ ...f, before: entries[entries.length - 1].seq }));
  };
  const newer = () => {
    setFilter((f) => ({ ...f, before: pages[pages.length - 1] ?? 0 }));
    setPages((p) => p.slice(0, -1));
  };
  return (
    <>
      <PageHeader title="Audit log" />
      <form className="inline-form filters" role="search" aria-label="Filter the audit log" onSubmit={submit} noValidate>
        <label htmlFor="audit-action">Action starts with</label>
        <input id="audit-action" value={draft.action} onChange={(e) => set("action")(e.target.value)}
          placeholder="e.g. POST /v1/admin/users" size={28} />
        <label htmlFor="audit-actor">Key id</label>
        <input id="audit-actor" value={draft.actor} onChange={(e) => set("actor")(e.target.value)} placeholder="any" size={14} />
        <label htmlFor="audit-since">From</label>
        <input id="audit-since" type="datetime-local" value={draft.since} onChange={(e) => set("since")(e.target.value)} />
        <label htmlFor="audit-until">To</label>
        <input id="audit-until" type="datetime-local" value={draft.until} onChange={(e) => set("until")(e.target.value)}
          aria-invalid={problem ? true : undefined} aria-describedby={problem ? "audit-filter-error" : undefined} />
        <button type="submit">Apply</button>
        {problem && <p className="error" id="audit-filter-error" role="alert">{problem}</p>}
      </form>
      <QueryView query={audit} what="the audit log" isEmpty={(d) => d.length === 0 && pages.length === 0}
        empty={<p>No audit entries match.</p>}>
        {(data) => (
          <>
            <div className="table-scroll">
              <table className="data-table compact" aria-label="Audit log">
                <thead>
                  <tr>
                    <th scope="col" className="num">#</th><th scope="col">When</th><th scope="col">Who</th>
                    <th scope="col">Action</th><th scope="col">Target</th><th scope="col">Address</th>
                    <th scope="col">Outcome</th>
                  </tr>
                </thead>
                <tbody>
                  {data.map((entry) => (
                    <tr key={entry.seq} data-action={entry.action}>
                      <td className="num">{entry.seq}</td>
                      <td>{formatWhen(entry.at)}</td>
                      <td title={entry.actor}>{names.data?.get(entry.actor) ?? <code>{entry.actor || "anonymous"}</code>}</td>
                      <td><code>{entry.action}</code></td>
                      <td><code>{entry.target}</code></td>
                      <td>{entry.address}</td>
                      <td><StatusBadge status={entry.outcome} /></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <nav className="pager" aria-label="Audit log pages">
              <button type="button" onClick={newer} disabled={pages.length === 0}>Newer</button>
              <span className="muted">Page {pages.length + 1}</span>
              <button type="button" onClick={() => older(data)} disabled={data.length < AUDIT_PAGE}>Older</button>
            </nav>
          </>
        )}
      </QueryView>
    </>
  );
}
