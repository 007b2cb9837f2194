/** The builder's graph with undo / redo: changes are recorded, drags once at their end. */
import { useCallback, useReducer } from "react";
import type { Graph } from "./graph";
import { type History, push, redo, startHistory, undo } from "./history";

export interface State {
  history: History<Graph>;
  /** What the canvas shows: the present, or a drag in progress. */
  live: Graph;
}

/** A new graph, or how to make it from the live one (for changes the canvas reports on its
 * own, such as a block's measured size, which may arrive after a reset: applied to the
 * graph of the moment, never to the one a callback saw when it was made). */
export type GraphUpdate = Graph | ((live: Graph) => Graph);

export type Action =
  | { kind: "change"; graph: GraphUpdate; record: boolean }
  | { kind: "undo" }
  | { kind: "redo" }
  | { kind: "reset"; graph: Graph };

/** The graph and its history: changes, drags (not recorded), undo, redo, reset. */
export function graphReducer(state: State, action: Action): State {
  switch (action.kind) {
    case "change": {
      const graph = typeof action.graph === "function" ? action.graph(state.live) : action.graph;
      return action.record ? { history: push(state.history, graph), live: graph } : { ...state, live: graph };
    }
    case "undo":
    case "redo": {
      const history = action.kind === "undo" ? undo(state.history) : redo(state.history);
      return { history, live: history.present };
    }
    case "reset":
      return { history: startHistory(action.graph), live: action.graph };
  }
}

export function useGraphHistory(initial: () => Graph) {
  const [state, dispatch] = useReducer(graphReducer, undefined, () => {
    const graph = initial();
    return { history: startHistory(graph), live: graph };
  });
  return {
    graph: state.live,
    /** The last recorded graph: the live one less a drag in progress (and selections). */
    present: state.history.present,
    canUndo: state.history.past.length > 0,
    canRedo: state.history.future.length > 0,
    change: useCallback((graph: GraphUpdate, record = true) => dispatch({ kind: "change", graph, record }), []),
    undo: useCallback(() => dispatch({ kind: "undo" }), []),
    redo: useCallback(() => dispatch({ kind: "redo" }), []),
    reset: useCallback((graph: Graph) => dispatch({ kind: "reset", graph }), []),
  };
}
