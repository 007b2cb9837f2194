/** The side panel: the selected block's config form and its last run, or the workflow's settings. */
import { useRef, useState } from "react";
import { ApprovalCard } from "./RunPanel";
import { type Variable, languageOf, referenceText } from "./references";
import type { FormField } from "./schemaForm";
import { fieldsOf } from "./schemaForm";
import { FieldInput } from "./FieldInput";
import type { BlockInfo, NodeRun, NodeSpec, PortSpec, Problem } from "./types";

const INPUTS_FIELD: FormField = {
  name: "inputs",
  label: "Workflow inputs",
  kind: "json",
  required: false,
  description: 'The Start block\'s outputs, e.g. {"text": {"type": "string"}}.',
  options: [],
  default: {},
  schema: { type: "object" },
};

interface NodePanelProps {
  node: NodeSpec;
  block: BlockInfo | undefined;
  problems: Problem[];
  run: NodeRun | undefined;
  workflowInputs: Record<string, PortSpec>;
  onConfig: (config: Record<string, unknown>) => void;
  onInputs: (inputs: Record<string, PortSpec>) => void;
  variables: Variable[];
  onDecide: (nodeId: string, approved: boolean, comment: string) => Promise<void>;
}

/** Fields a variable can go into: text that is a template or an expression. */
const TAKES_TEXT = new Set(["string", "text", "json"]);
/** Blocks whose fields are declarations (ports), never read as templates. */
const NO_VARIABLES = new Set(["start", "end"]);

export function NodePanel({ node, block, problems, run, workflowInputs, onConfig, onInputs, variables, onDecide }: NodePanelProps) {
  const config = node.config ?? {};
  const fields = block ? fieldsOf(block.config_schema) : [];
  const inserters = useRef(new Map<string, (text: string) => void>());
  const textFields = NO_VARIABLES.has(node.type) ? [] : fields.filter((f) => TAKES_TEXT.has(f.kind));
  const [target, setTarget] = useState<string | null>(null);
  const into = textFields.find((f) => f.name === target) ?? textFields[0];
  const fieldError = (name: string) =>
    problems.find((p) => p.field === `config.${name}` || p.field.startsWith(`config.${name}.`))?.message;
  const other = problems.filter((p) => !fields.some((f) => fieldError(f.name) === p.message));
  return (
    <section className="wf-panel" aria-label={`Block ${node.id}`}>
      <h2>{block?.title ?? node.type} <span className="muted">· {node.id}</span></h2>
      {block && <p className="muted">{block.description}</p>}
      {other.length > 0 && (
        <ul className="wf-problems" role="alert">
          {other.map((p, i) => <li key={i}><code>{p.field}</code>: {p.message}</li>)}
        </ul>
      )}
      <form onSubmit={(event) => event.preventDefault()} aria-label={`Configure ${node.id}`}>
        {node.type === "start" && (
          <FieldInput
            idPrefix={`cfg-${node.id}`}
            field={INPUTS_FIELD}
            value={workflowInputs}
            onCommit={(value) => onInputs((value ?? {}) as Record<string, PortSpec>)}
          />
        )}
        {fields.map((field) => (
          <FieldInput
            key={`${node.id}-${field.name}`}
            idPrefix={`cfg-${node.id}`}
            field={field}
            value={config[field.name]}
            serverError={fieldError(field.name)}
            onRegisterInsert={TAKES_TEXT.has(field.kind) ? (insert) => inserters.current.set(field.name, insert) : undefined}
            onFocusField={TAKES_TEXT.has(field.kind) ? () => setTarget(field.name) : undefined}
            onCommit={(value) => {
              const next = { ...config };
              if (value === undefined) delete next[field.name];
              else next[field.name] = value;
              onConfig(next);
            }}
          />
        ))}
        {!fields.length && node.type !== "start" && <p className="muted">This block has nothing to configure.</p>}
      </form>
      {into && (
        <VariablePicker
          variables={variables}
          field={into.label}
          language={languageOf(node.type, into.name, config)}
          onInsert={(text) => inserters.current.get(into.name)?.(text)}
        />
      )}
      {run?.status === "waiting" && run.block_type === "approval" && <ApprovalCard run={run} onDecide={onDecide} />}
      {run && <RunDetail run={run} />}
    </section>
  );
}

interface PickerProps {
  variables: Variable[];
  field: string;
  language: ReturnType<typeof languageOf>;
  onInsert: (text: string) => void;
}

/** Upstream blocks' outputs and the workflow's inputs, inserted with the right syntax into
 * the field last focused (at its caret). */
function VariablePicker({ variables, field, language, onInsert }: PickerProps) {
  const groups = new Map<string, Variable[]>();
  for (const v of variables) {
    const group = v.node ?? (v.path.startsWith("vars") ? "Workflow variables" : "Workflow inputs");
    groups.set(group, [...(groups.get(group) ?? []), v]);
  }
  return (
    <section className="wf-variables" aria-label="Variables">
      <h3>Insert a variable</h3>
      <p className="muted">Into <strong data-testid="variable-target">{field}</strong>, at the caret{language === "template" ? " (as a template)" : ` (as a ${language === "jinja" ? "Jinja" : "JMESPath"} expression)`}.</p>
      {variables.length === 0 && <p className="muted">Connect blocks into this one to use their outputs.</p>}
      {[...groups].map(([group, items]) => (
        <div key={group}>
          <h4>{group}</h4>
          <ul>
            {items.map((v) => {
              const text = referenceText(v, language);
              return (
                <li key={v.path}>
                  <button
                    type="button"
                    className="wf-variable"
                    data-variable={v.path}
                    title={`Insert ${text}`}
                    // Keep the caret in the field being edited.
                    onMouseDown={(event) => event.preventDefault()}
                    onClick={() => onInsert(text)}
                  >
                    {v.node ? v.name : v.path}
                  </button>{" "}
                  <small>{v.type}</small>
                </li>
              );
            })}
          </ul>
        </div>
      ))}
    </section>
  );
}

const json = (value: unknown) => JSON.stringify(value, null, 2);

/** A block's record in the last run: status, timing, tokens, inputs, outputs, error. */
export function RunDetail({ run }: { run: NodeRun }) {
  return (
    <section className="wf-run-detail" aria-label={`Last run of ${run.node_id}`}>
      <h3>Last run</h3>
      <dl>
        <dt>Status</dt><dd data-testid="detail-status">{run.status}</dd>
        <dt>Time</dt><dd>{run.duration_ms == null ? "—" : `${run.duration_ms.toFixed(1)} ms`}</dd>
        <dt>Attempts</dt><dd>{run.attempts}</dd>
        <dt>Tokens</dt><dd>{run.tokens}</dd>
        <dt>Cost</dt><dd>${run.cost_usd.toFixed(4)}</dd>
      </dl>
      {run.error && <p className="error" role="alert">{run.error}</p>}
      <h4>Inputs</h4>
      <pre className="mono" data-testid="detail-inputs">{json(run.inputs)}</pre>
      <h4>Outputs</h4>
      <pre className="mono" data-testid="detail-outputs">{json(run.outputs)}</pre>
    </section>
  );
}
