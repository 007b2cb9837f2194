/** The canvas (React Flow nodes and edges) <-> the workflow definition (the DSL). */
import type { Edge, Node } from "@xyflow/react";
import { CONTROL_IN } from "./ports";
import type { EdgeSpec, NodeSpec, WorkflowDefinition } from "./types";

/** What a canvas node carries: its definition, position excepted. */
export type BlockData = { spec: NodeSpec };
export type BlockNode = Node<BlockData, "block">;

/** Everything of a definition that is not on the canvas (name, inputs, outputs, ...). */
export type WorkflowMeta = Omit<WorkflowDefinition, "nodes" | "edges">;

export interface Graph {
  meta: WorkflowMeta;
  nodes: BlockNode[];
  edges: Edge[];
}

const COLUMN = 260;
const ROW = 140;

/** Where a node without a stored position goes: left to right in definition order. */
function fallbackPosition(index: number) {
  return { x: 40 + (index % 5) * COLUMN, y: 40 + Math.floor(index / 5) * ROW };
}

export function edgeId(edge: EdgeSpec): string {
  return `${edge.source}.${edge.source_handle}->${edge.target}.${edge.target_handle ?? CONTROL_IN}`;
}

export function definitionToGraph(definition: WorkflowDefinition): Graph {
  const { nodes, edges, ...meta } = definition;
  return {
    meta,
    nodes: nodes.map((spec, index) => {
      const { position, ...rest } = spec;
      return {
        id: spec.id,
        type: "block",
        position: position ? { x: position.x, y: position.y } : fallbackPosition(index),
        data: { spec: rest },
      };
    }),
    edges: edges.map((edge) => ({
      id: edge.id ?? edgeId(edge),
      source: edge.source,
      sourceHandle: edge.source_handle,
      target: edge.target,
      targetHandle: edge.target_handle ?? CONTROL_IN,
    })),
  };
}

export function graphToDefinition(graph: Graph): WorkflowDefinition {
  return {
    ...graph.meta,
    nodes: graph.nodes.map((node) => ({
      ...node.data.spec,
      id: node.id,
      position: { x: Math.round(node.position.x), y: Math.round(node.position.y) },
    })),
    edges: graph.edges.map((edge) => {
      const out: EdgeSpec = {
        source: edge.source,
        source_handle: edge.sourceHandle ?? "done",
        target: edge.target,
      };
      if (edge.targetHandle && edge.targetHandle !== CONTROL_IN) out.target_handle = edge.targetHandle;
      return out;
    }),
  };
}

/** A fresh node id for a block type: `transform`, then `transform_2`, ... */
export function newNodeId(type: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  if (!used.has(type)) return type;
  for (let n = 2; ; n += 1) if (!used.has(`${type}_${n}`)) return `${type}_${n}`;
}

/** An empty workflow: a Start and an End. */
export function emptyDefinition(name: string): WorkflowDefinition {
  return {
    name,
    inputs: {},
    nodes: [
      { id: "start", type: "start", config: {}, position: { x: 40, y: 120 } },
      { id: "end", type: "end", config: { outputs: {} }, position: { x: 600, y: 120 } },
    ],
    edges: [],
  };
}

/** The definition with ${param} placeholders replaced by the template's defaults. A
 * string that is only a placeholder takes the value's own type (a number stays one). */
export function fillTemplate(
  definition: unknown,
  parameters: Record<string, { default?: unknown }>,
): unknown {
  const value = (name: string) => parameters[name]?.default;
  const walk = (item: unknown): unknown => {
    if (typeof item === "string") {
      const whole = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(item);
      if (whole && whole[1] in parameters) return value(whole[1]) ?? "";
      return item.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (match, name: string) =>
        name in parameters ? String(value(name) ?? "") : match,
      );
    }
    if (Array.isArray(item)) return item.map(walk);
    if (item && typeof item === "object") {
      return Object.fromEntries(Object.entries(item).map(([k, v]) => [k, walk(v)]));
    }
    return item;
  };
  return walk(definition);
}
