/** The canvas fitted to its graph once per load (a workflow opened or imported, a template,
 * a new workflow; the first graph is fitted by React Flow's `fitView` prop), and never on
 * other changes: a fit on every change would fight the user's panning and zooming. */
import { type Node, useReactFlow, useStoreApi } from "@xyflow/react";
import { useEffect, useRef, useState } from "react";

/** How the canvas frames a graph. The zoom keeps React Flow's floor (0.5): a graph too
 * large for the canvas at that zoom is centred, and the minimap shows the rest. (A floor of
 * 0.1, low enough for 300 blocks to fit whole, doubled the drag bench's work per frame
 * even at zoom 2, in Chromium 156.) */
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
 * Fits the view once for each new value of `load` above 0 (a counter the builder raises on
 * each load), after React Flow has measured the loaded blocks. Returns whether the last load's fit
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
