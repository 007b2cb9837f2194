/** With no block selected: the workflow's problems, and a run with inputs and its result. */
import { useState } from "react";
import { FieldInput } from "./FieldInput";
import { inputField } from "./schemaForm";
import type { NodeRun, PortSpec, Problem, Run } from "./types";

interface Props {
  inputs: Record<string, PortSpec>;
  problems: Problem[];
  run: Run | null;
  runError: string | null;
  canRun: boolean;
  whyNot: string | null;
  running: boolean;
  onRun: (inputs: Record<string, unknown>) => void;
  /** Approval blocks waiting for a decision in the current run. */
  waiting: NodeRun[];
  onDecide: (nodeId: string, approved: boolean, comment: string) => Promise<void>;
}

/** A waiting approval: its message, a comment, and the decision. */
export function ApprovalCard({ run, onDecide }: { run: NodeRun; onDecide: Props["onDecide"] }) {
  const [comment, setComment] = useState("");
  const [sending, setSending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = `approval-${run.node_id}`;
  async function send(approved: boolean) {
    setSending(true);
    setError(null);
    try {
      await onDecide(run.node_id, approved, comment);
    } catch (caught) {
      setError(caught instanceof Error ? caught.message : String(caught));
    } finally {
      setSending(false);
    }
  }
  const message = typeof run.outputs.message === "string" ? run.outputs.message : "Approve to continue.";
  return (
    <section className="wf-approval" aria-label={`Approval ${run.node_id}`}>
      <h3>Waiting for approval: {run.node_id}</h3>
      <p data-testid="approval-message">{message}</p>
      <label htmlFor={`${id}-comment`}>Comment</label>
      <textarea id={`${id}-comment`} rows={2} maxLength={4000} value={comment} onChange={(e) => setComment(e.target.value)} />
      <button type="button" className="primary" disabled={sending} onClick={() => void send(true)}>Approve</button>{" "}
      <button type="button" disabled={sending} onClick={() => void send(false)}>Reject</button>
      {error && <p className="error" role="alert">{error}</p>}
    </section>
  );
}

export function RunPanel({ inputs, problems, run, runError, canRun, whyNot, running, onRun, waiting, onDecide }: Props) {
  const [values, setValues] = useState<Record<string, unknown>>({});
  const [missing, setMissing] = useState<Set<string>>(new Set());
  const general = problems.filter((p) => p.node === null);
  const fields = Object.entries(inputs).map(([name, spec]) => inputField(name, spec));
  return (
    <section className="wf-panel" aria-label="Workflow">
      <h2>Workflow</h2>
      {problems.length === 0 ? (
        <p className="muted" data-testid="validity">No problems found.</p>
      ) : (
        <p className="error" data-testid="validity">{problems.length} problem{problems.length === 1 ? "" : "s"} to fix.</p>
      )}
      {general.length > 0 && (
        <ul className="wf-problems">
          {general.map((p, i) => <li key={i}><code>{p.field}</code>: {p.message}</li>)}
        </ul>
      )}
      <h3>Run</h3>
      <form
        aria-label="Run inputs"
        onSubmit={(event) => {
          event.preventDefault();
          // Checked before sending: a required input left empty is named beside its field.
          const empty = new Set(fields.filter((f) => f.required && values[f.name] === undefined).map((f) => f.name));
          setMissing(empty);
          if (!empty.size) onRun(values);
        }}
      >
        {fields.length === 0 && <p className="muted">This workflow takes no inputs.</p>}
        {fields.map((field) => (
          <FieldInput
            key={field.name}
            idPrefix="run-input"
            field={field}
            value={values[field.name]}
            serverError={missing.has(field.name) ? "Give this input a value to run." : undefined}
            onCommit={(value) => {
              setValues((old) => ({ ...old, [field.name]: value }));
              setMissing((old) => (old.has(field.name) ? new Set([...old].filter((n) => n !== field.name)) : old));
            }}
          />
        ))}
        <button type="submit" className="primary" disabled={!canRun || running} title={whyNot ?? undefined}>
          {running ? "Running…" : "Run"}
        </button>
        {whyNot && <p className="muted">{whyNot}</p>}
      </form>
      {runError && <p className="error" role="alert">{runError}</p>}
      {run && (
        <section aria-label="Run result" className="wf-run-result">
          <p>
            Run <code>{run.id}</code> (version {run.version}): <strong data-testid="run-status">{waiting.length && run.status === "running" ? "waiting" : run.status}</strong>
            {run.tokens > 0 && <> · {run.tokens} tokens</>}
          </p>
          {run.error && <p className="error">{run.error}</p>}
          {waiting.map((node) => <ApprovalCard key={node.node_id} run={node} onDecide={onDecide} />)}
          {run.outputs && run.finished_at && <pre className="mono" data-testid="run-outputs">{JSON.stringify(run.outputs, null, 2)}</pre>}
          <p className="muted">Select a block to see its inputs, outputs and timing.</p>
        </section>
      )}
    </section>
  );
}
