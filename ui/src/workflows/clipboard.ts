/** Copy and paste of selected blocks, with the edges among them (pure). */
import type { Edge } from "@xyflow/react";
import { type BlockNode, type Graph, newNodeId } from "./graph";
import type { NodeSpec } from "./types";

/** What was copied: blocks (config and position) and the edges between them. */
export interface Clip {
  nodes: { spec: NodeSpec; position: { x: number; y: number } }[];
  edges: Pick<Edge, "source" | "sourceHandle" | "target" | "targetHandle">[];
}

/** How far a paste lands from what was copied, so it never hides the original. */
export const PASTE_OFFSET = 40;

/** The selected blocks and the edges with both ends among them; null when none is selected. */
export function copySelection(graph: Graph): Clip | null {
  const chosen = graph.nodes.filter((n) => n.selected);
  if (!chosen.length) return null;
  const ids = new Set(chosen.map((n) => n.id));
  return {
    nodes: chosen.map((n) => ({ spec: structuredClone(n.data.spec), position: { ...n.position } })),
    edges: graph.edges
      .filter((e) => ids.has(e.source) && ids.has(e.target))
      .map(({ source, sourceHandle, target, targetHandle }) => ({ source, sourceHandle, target, targetHandle })),
  };
}

/** The graph with the clip added under fresh ids, the pasted blocks selected (only they). */
export function pasteClip(graph: Graph, clip: Clip, offset = PASTE_OFFSET): Graph {
  const taken = graph.nodes.map((n) => n.id);
  const renamed = new Map<string, string>();
  const added: BlockNode[] = clip.nodes.map(({ spec, position }) => {
    const id = newNodeId(spec.type === "start" || spec.type === "end" ? `${spec.type}_copy` : spec.type, taken);
    taken.push(id);
    renamed.set(spec.id, id);
    return {
      id,
      type: "block",
      position: { x: position.x + offset, y: position.y + offset },
      data: { spec: { ...structuredClone(spec), id } },
      selected: true,
    };
  });
  const edges: Edge[] = clip.edges.map((e) => {
    const source = renamed.get(e.source) ?? e.source;
    const target = renamed.get(e.target) ?? e.target;
    return {
      id: `${source}.${e.sourceHandle ?? "done"}->${target}.${e.targetHandle ?? ""}`,
      source, sourceHandle: e.sourceHandle, target, targetHandle: e.targetHandle,
    };
  });
  return {
    ...graph,
    nodes: [...graph.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...added],
    edges: [...graph.edges.map((e) => (e.selected ? { ...e, selected: false } : e)), ...edges],
  };
}

/** A clip read back from storage, or null when the text is not one. */
export function parseClip(text: string | null): Clip | null {
  if (!text) return null;
  try {
    const clip = JSON.parse(text) as Clip;
    return Array.isArray(clip.nodes) && Array.isArray(clip.edges) ? clip : null;
  } catch {
    return null;
  }
}

/** The graph without its selected blocks and their edges (what a cut leaves). */
export function removeSelected(graph: Graph): Graph {
  const gone = new Set(graph.nodes.filter((n) => n.selected).map((n) => n.id));
  return {
    ...graph,
    nodes: graph.nodes.filter((n) => !gone.has(n.id)),
    edges: graph.edges.filter((e) => !gone.has(e.source) && !gone.has(e.target)),
  };
}
