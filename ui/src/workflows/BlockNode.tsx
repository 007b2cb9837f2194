/** A block on the canvas: typed input handles left, outputs right, control handles below. */
import { Handle, type NodeProps, Position } from "@xyflow/react";
import { createContext, memo, useContext } from "react";
import type { BlockNode as BlockNodeType } from "./graph";
import { BASE_CONTROLS, CONTROL_IN, type NodePorts } from "./ports";
import type { NodeRun, Problem } from "./types";

/** What nodes read besides their own data: ports, problems and the run's records. */
export interface CanvasInfo {
  ports: (nodeId: string) => NodePorts | undefined;
  problems: Map<string, Problem[]>;
  runs: Map<string, NodeRun>;
  titles: Map<string, string>;
}

export const CanvasContext = createContext<CanvasInfo>({
  ports: () => undefined, problems: new Map(), runs: new Map(), titles: new Map(),
});

const STATUS_LABEL: Record<string, string> = {
  pending: "Pending", running: "Running", waiting: "Waiting", succeeded: "Succeeded",
  failed: "Failed", skipped: "Skipped", cancelled: "Cancelled",
};

function BlockNodeView({ id, data, selected }: NodeProps<BlockNodeType>) {
  const info = useContext(CanvasContext);
  const ports = info.ports(id) ?? { inputs: [], outputs: [], controls: [] };
  const problems = info.problems.get(id) ?? [];
  const run = info.runs.get(id);
  const controls = [...BASE_CONTROLS, ...ports.controls];
  const title = info.titles.get(data.spec.type) ?? data.spec.type;
  return (
    <div
      className={`wf-node${selected ? " selected" : ""}${problems.length ? " invalid" : ""}`}
      data-node-id={id}
      data-status={run?.status ?? "idle"}
    >
      {data.spec.type !== "start" && (
        <Handle type="target" position={Position.Top} id={CONTROL_IN} className="wf-handle control" title="Run after (control)" />
      )}
      <header className="wf-node-head">
        <strong>{data.spec.name || title}</strong>
        <span className="wf-node-id">{id}</span>
        {run && (
          <span className={`wf-status ${run.status}`} data-testid="node-status">
            {STATUS_LABEL[run.status] ?? run.status}
          </span>
        )}
      </header>
      <div className="wf-ports">
        <ul className="wf-inputs" aria-label={`Inputs of ${id}`}>
          {ports.inputs.map((port) => (
            <li key={port.name}>
              <Handle type="target" position={Position.Left} id={port.name} className="wf-handle" title={`${port.name}: ${port.type}`} />
              {port.name}
              {port.required && <span aria-label="required">*</span>} <small>{port.type}</small>
            </li>
          ))}
        </ul>
        <ul className="wf-outputs" aria-label={`Outputs of ${id}`}>
          {ports.outputs.map((port) => (
            <li key={port.name}>
              {port.name} <small>{port.type}</small>
              <Handle type="source" position={Position.Right} id={port.name} className="wf-handle" title={`${port.name}: ${port.type}`} />
            </li>
          ))}
        </ul>
      </div>
      <ul className="wf-controls" aria-label={`Control handles of ${id}`}>
        {controls.map((name) => (
          <li key={name}>
            {name}
            <Handle type="source" position={Position.Bottom} id={name} className="wf-handle control" title={`${name} (control)`} />
          </li>
        ))}
      </ul>
      {problems.length > 0 && (
        <ul className="wf-node-problems" data-testid="node-problems">
          {problems.map((p, index) => (
            <li key={index}>
              <code>{p.field}</code>: {p.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** Rendered again only when what it shows changes: not on each frame of its drag (React
 * Flow passes the moving position, which the block does not show). */
export const BlockNodeComponent = memo(
  BlockNodeView,
  (before, after) => before.id === after.id && before.data === after.data && before.selected === after.selected,
);
