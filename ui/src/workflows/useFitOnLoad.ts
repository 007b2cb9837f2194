/** The canvas fitted to its graph once per load (the builder opening, a workflow opened or
 * imported, a template, a new workflow), and never on other changes: a fit on every change
 * would fight the user's panning and zooming. */
import { type Node, useReactFlow, useStoreApi } from "@xyflow/react";
import { useEffect, useRef, useState } from "react";

/** How the canvas frames a graph. The zoom's floor is the canvas's own (FlowCanvas's
 * `minZoom`): a 300-block graph fits whole. */
export const FIT_OPTIONS = { padding: 0.2 } as const;

/**
 * Whether load number `load` is due its fit: not yet started, and React Flow has measured
 * every block of the graph in its store. React Flow fits the blocks it has measured and
 * leaves the others out, so a fit asked for before a large graph is measured frames a part
 * of it, or nothing (an empty graph has nothing to measure, and is due at once).
 */
export function fitDue(load: number, started: number, measured: boolean, blocks: number): boolean {
  return load > started && (measured || blocks === 0);
}

/**
 * Fits the view once for each new value of `load` (a counter the builder raises on each
 * load), after React Flow has measured the loaded blocks. Returns whether the last load's fit
 * is done (the viewport has moved): what the canvas tells tests and benchmarks.
 */
export function useFitOnLoad(load: number, nodes: readonly Node[]): boolean {
  const flow = useReactFlow();
  const store = useStoreApi();
  const started = useRef(0);
  const [fitted, setFitted] = useState(0);
  useEffect(() => {
    // The store's flag (`useNodesInitialized` reads it too), read here rather than rendered:
    // React Flow takes new nodes into its store in its own effects, which run before this
    // one, and it becomes true when the blocks' measured sizes come back as new nodes.
    if (!fitDue(load, started.current, store.getState().nodesInitialized, nodes.length)) return;
    started.current = load;
    void flow.fitView(FIT_OPTIONS).then(() => setFitted(load));
  }, [load, nodes, flow, store]);
  return fitted === load;
}
