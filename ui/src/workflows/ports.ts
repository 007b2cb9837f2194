/**
 * Typed ports of each block, and whether a connection between two is allowed.
 *
 * A block's ports depend on its config (an End's inputs are its `outputs`, a Transform's
 * outputs its `expressions`): the server says which, through POST /v1/workflows/ports/batch
 * (see usePorts.ts); only a Start's outputs, the workflow's own inputs, are read here.
 * `typeFits` mirrors dsl.type_fits so a refused connection says why at once; the server
 * checks every edge again on validate and save.
 */
import type { EdgeSpec, PortSpec, WorkflowDefinition } from "./types";

export interface Port {
  name: string;
  type: string;
  required: boolean;
}

export interface NodePorts {
  inputs: Port[];
  outputs: Port[];
  /** Control handles besides `done` and `error` (a Condition's true / false). */
  controls: string[];
}

/** The target handle of an edge that carries no value (control only). */
export const CONTROL_IN = "__control";
/** Control handles every block has. */
export const BASE_CONTROLS = ["done", "error"];

/** One block's answer in POST /v1/workflows/ports/batch: its ports, or why it has none. */
export interface PortsAnswer {
  type: string;
  inputs?: Record<string, PortSpec>;
  outputs?: Record<string, PortSpec>;
  controls?: string[];
  error?: { message: string; param?: string | null };
}

function record(value: unknown): Record<string, unknown> {
  return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function fromSpecs(specs: unknown): Port[] {
  return Object.entries(record(specs)).map(([name, raw]) => {
    const spec = record(raw) as PortSpec;
    return { name, type: typeof spec.type === "string" ? spec.type : "any", required: spec.required ?? true };
  });
}

/** The server's answer as the canvas's ports; null when the config gives none. */
export function portsFromAnswer(answer: PortsAnswer): NodePorts | null {
  if (answer.error) return null;
  return {
    inputs: fromSpecs(answer.inputs),
    outputs: fromSpecs(answer.outputs),
    controls: (answer.controls ?? []).filter((c) => !BASE_CONTROLS.includes(c)),
  };
}

/** A Start's ports: it outputs the workflow's inputs. */
export function startPorts(workflowInputs: WorkflowDefinition["inputs"] = {}): NodePorts {
  return { inputs: [], outputs: fromSpecs(workflowInputs), controls: [] };
}

const TYPE_RE = /^(any|string|number|integer|boolean|object|array)(\[(.+)\])?$/;

/** `"array[string]"` -> `["array", "string"]`; null when the type is unknown. */
export function parseType(spec: string): [string, string | null] | null {
  const match = TYPE_RE.exec(spec.trim());
  if (!match || (match[3] !== undefined && match[1] !== "array")) return null;
  const item = match[3] ?? null;
  if (item !== null && parseType(item) === null) return null;
  return [match[1], item];
}

/** Whether a value of type `source` may flow into a port of type `target` (dsl.type_fits). */
export function typeFits(source: string, target: string): boolean {
  const s = parseType(source);
  const t = parseType(target);
  if (!s || !t) return false;
  if (s[0] === "any" || t[0] === "any") return true;
  if (s[0] === t[0]) {
    if (t[0] !== "array" || t[1] === null || s[1] === null) return true;
    return typeFits(s[1], t[1]);
  }
  return s[0] === "integer" && t[0] === "number";
}

export interface Connection {
  source: string;
  sourceHandle: string;
  target: string;
  targetHandle: string | null;
}

/**
 * Why a connection may not be made, or null when it may. `ports` gives each node's
 * ports; `edges` are those already drawn (an input takes one value).
 */
export function connectionProblem(
  connection: Connection,
  ports: (nodeId: string) => NodePorts | undefined,
  edges: EdgeSpec[],
): string | null {
  const { source, sourceHandle, target, targetHandle } = connection;
  if (source === target) return "A block cannot connect to itself.";
  const from = ports(source);
  const to = ports(target);
  if (!from || !to) return "Both ends must be blocks on the canvas.";
  const isControl = [...BASE_CONTROLS, ...from.controls].includes(sourceHandle);
  const output = from.outputs.find((p) => p.name === sourceHandle);
  if (!output && !isControl) return `${source} has no output "${sourceHandle}".`;
  if (targetHandle === null || targetHandle === CONTROL_IN) {
    return output && !isControl ? `A value ("${sourceHandle}") must go to an input, not the control handle.` : null;
  }
  const input = to.inputs.find((p) => p.name === targetHandle);
  if (!input) return `${target} has no input "${targetHandle}".`;
  if (!output) return `The control handle "${sourceHandle}" carries no value for the input "${targetHandle}".`;
  if (!typeFits(output.type, input.type)) {
    return `Type mismatch: ${source}.${sourceHandle} is ${output.type}, but ${target}.${targetHandle} takes ${input.type}.`;
  }
  if (edges.some((e) => e.target === target && e.target_handle === targetHandle)) {
    return `${target}.${targetHandle} is already connected; remove that edge first.`;
  }
  return null;
}
