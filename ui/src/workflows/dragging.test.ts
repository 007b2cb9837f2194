import { type NodeChange, applyNodeChanges } from "@xyflow/react";
import { describe, expect, it } from "vitest";
import { type DragPositions, dragFrame, route, withDragged } from "./dragging";
import { type BlockNode, type Graph, definitionToGraph, emptyDefinition } from "./graph";
import { startHistory } from "./history";
import { type State, graphReducer } from "./useGraphHistory";

const frame = (id: string, x: number, y: number): NodeChange<BlockNode> => ({ id, type: "position", position: { x, y }, dragging: true });
const release = (id: string, position?: { x: number; y: number }): NodeChange<BlockNode> => ({ id, type: "position", position, dragging: false });

/** What the builder does with what the canvas routes to the graph (Builder's onNodesChange). */
function toGraph(state: State, changes: NodeChange<BlockNode>[]): State {
  const record = changes.some((c) => c.type === "position" && c.dragging === false);
  return graphReducer(state, { kind: "change", graph: (live: Graph) => ({ ...live, nodes: applyNodeChanges(changes, live.nodes) }), record });
}

describe("a drag in progress", () => {
  it("is only changes of position while dragging", () => {
    expect(dragFrame([frame("start", 1, 2), frame("end", 3, 4)])).toEqual(new Map([["start", { x: 1, y: 2 }], ["end", { x: 3, y: 4 }]]));
    expect(dragFrame([release("start", { x: 1, y: 2 })])).toBeNull();
    expect(dragFrame([frame("start", 1, 2), { id: "end", type: "select", selected: true }])).toBeNull();
    expect(dragFrame([])).toBeNull();
  });

  it("stays with the canvas, and reaches the graph once, as one step to undo", () => {
    const graph = definitionToGraph(emptyDefinition("w"));
    let state: State = { history: startHistory(graph), live: graph };
    let dragged: DragPositions | null = null;
    const send = (changes: NodeChange<BlockNode>[]) => {
      const routed = route(changes, dragged);
      dragged = routed.dragged;
      if (routed.toGraph) state = toGraph(state, routed.toGraph);
    };
    send([{ id: "end", type: "select", selected: true }]);
    for (let x = 610; x <= 700; x += 10) send([frame("end", x, 150)]);
    // The graph has not moved; the canvas shows the block where the pointer is.
    expect(state.live.nodes[1].position).toEqual({ x: 600, y: 120 });
    const shown = withDragged(state.live.nodes, dragged);
    expect(shown[1]).toMatchObject({ id: "end", position: { x: 700, y: 150 }, dragging: true, selected: true });
    expect(shown[0]).toBe(state.live.nodes[0]);
    // Let go (here without a position: the drag's last one is used).
    send([release("end")]);
    expect(dragged).toBeNull();
    expect(state.live.nodes[1].position).toEqual({ x: 700, y: 150 });
    expect(withDragged(state.live.nodes, dragged)).toBe(state.live.nodes);
    expect(state.history.past).toHaveLength(1);
    state = graphReducer(state, { kind: "undo" });
    expect(state.live.nodes[1].position).toEqual({ x: 600, y: 120 });
  });

  it("lets other changes through while it lasts", () => {
    const routed = route([{ id: "end", type: "select", selected: false }], new Map([["end", { x: 1, y: 1 }]]));
    expect(routed.toGraph).toHaveLength(1);
    expect(routed.dragged?.get("end")).toEqual({ x: 1, y: 1 });
  });
});
