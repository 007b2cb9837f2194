import { describe, expect, it } from "vitest";
import { canRedo, canUndo, push, redo, startHistory, undo } from "./history";
import type { Graph } from "./graph";
import { graphReducer } from "./useGraphHistory";

describe("undo stack", () => {
  it("undoes and redoes in order", () => {
    let h = startHistory("a");
    h = push(push(h, "b"), "c");
    expect(canRedo(h)).toBe(false);
    h = undo(h);
    expect(h.present).toBe("b");
    h = undo(h);
    expect(h.present).toBe("a");
    expect(canUndo(h)).toBe(false);
    expect(undo(h)).toBe(h);
    h = redo(h);
    expect(h.present).toBe("b");
    expect(redo(redo(h)).present).toBe("c");
  });
  it("drops redo on a new change and keeps at most the limit", () => {
    let h = push(push(startHistory(0), 1), 2);
    h = push(undo(h), 9);
    expect(h.future).toEqual([]);
    expect(redo(h)).toBe(h);
    let long = startHistory(0);
    for (let i = 1; i <= 10; i += 1) long = push(long, i, 3);
    expect(long.past).toEqual([7, 8, 9]);
    expect(push(long, long.present)).toBe(long);
  });
});

describe("the builder's graph reducer", () => {
  const graph = (name: string): Graph => ({ meta: { name }, nodes: [], edges: [] });
  it("applies a late canvas change to the graph of the moment, not the one it was made for", () => {
    let state = graphReducer({ history: startHistory(graph("a")), live: graph("a") }, { kind: "reset", graph: graph("b") });
    state = graphReducer(state, { kind: "change", graph: (live) => ({ ...live, edges: [] }), record: false });
    expect(state.live.meta.name).toBe("b");
    expect(state.history.past).toEqual([]);
  });
  it("records changes for undo, not drags in progress", () => {
    let state = graphReducer({ history: startHistory(graph("a")), live: graph("a") }, { kind: "change", graph: graph("drag"), record: false });
    expect(state.history.present.meta.name).toBe("a");
    state = graphReducer(state, { kind: "change", graph: graph("b"), record: true });
    state = graphReducer(state, { kind: "undo" });
    expect(state.live.meta.name).toBe("a");
  });
});
