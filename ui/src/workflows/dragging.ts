/** A drag in progress, kept beside the graph: the canvas shows the dragged blocks where the
 * pointer has them, and the graph (its history, the definition, the side panel, the
 * toolbar) changes once, when the drag ends. On a 300-block graph, re-rendering the whole
 * builder on each frame of a drag was about half of the frame's main-thread time. */
import type { NodeChange, XYPosition } from "@xyflow/react";
import type { BlockNode } from "./graph";

/** Where the blocks being dragged are now, by node id. */
export type DragPositions = ReadonlyMap<string, XYPosition>;

/** The positions in these changes if they are one frame of a drag and nothing else. */
export function dragFrame(changes: NodeChange<BlockNode>[]): Map<string, XYPosition> | null {
  const positions = new Map<string, XYPosition>();
  for (const change of changes) {
    if (change.type !== "position" || change.dragging !== true || !change.position) return null;
    positions.set(change.id, change.position);
  }
  return positions.size ? positions : null;
}

/** The changes, a block let go without a position put where the drag last had it. */
function settle(changes: NodeChange<BlockNode>[], dragged: DragPositions): NodeChange<BlockNode>[] {
  return changes.map((change) =>
    change.type === "position" && !change.position && dragged.has(change.id)
      ? { ...change, position: dragged.get(change.id) }
      : change,
  );
}

/** Where the canvas's node changes go: a drag's frame stays with the canvas (the drag's
 * positions), everything else goes to the graph, a drag's end with the last positions. */
export function route(
  changes: NodeChange<BlockNode>[],
  dragged: DragPositions | null,
): { dragged: DragPositions | null; toGraph: NodeChange<BlockNode>[] | null } {
  const frame = dragFrame(changes);
  if (frame) return { dragged: new Map([...(dragged ?? []), ...frame]), toGraph: null };
  const ends = changes.some((change) => change.type === "position" && change.dragging === false);
  if (ends && dragged) return { dragged: null, toGraph: settle(changes, dragged) };
  return { dragged, toGraph: changes };
}

/** The nodes as the canvas shows them: the dragged ones where the drag has them (every
 * other node is the same object, so React Flow reuses what it built for it). */
export function withDragged(nodes: BlockNode[], dragged: DragPositions | null): BlockNode[] {
  if (!dragged?.size) return nodes;
  return nodes.map((node) => {
    const at = dragged.get(node.id);
    return at ? { ...node, position: at, dragging: true } : node;
  });
}
