/** The builder's canvas (React Flow): blocks, edges, minimap, and a drag in progress. */
import {
  Background, type Connection, Controls, type Edge, type EdgeChange, MiniMap, type NodeChange, ReactFlow,
} from "@xyflow/react";
import { type DragEvent, memo, useCallback, useMemo, useRef, useState } from "react";
import { BlockNodeComponent, CanvasContext, type CanvasInfo } from "./BlockNode";
import { type DragPositions, route, withDragged } from "./dragging";
import type { BlockNode } from "./graph";
import { FIT_OPTIONS, useFitOnLoad } from "./useFitOnLoad";

// Props that must keep their identity: the canvas renders on every frame of a drag, and a
// new array or object here would re-render React Flow's whole graph view each time.
const NODE_TYPES = { block: BlockNodeComponent };
const DELETE_KEYS = ["Delete", "Backspace"];
const PRO_OPTIONS = { hideAttribution: true };

interface Props {
  nodes: BlockNode[];
  edges: Edge[];
  info: CanvasInfo;
  /** Raised by each load of a graph after the first: the view fits the graph once for each
   * value. */
  load: number;
  /** Every change but a drag's frames: a drag arrives once, at its end. */
  onNodesChange: (changes: NodeChange<BlockNode>[]) => void;
  onEdgesChange: (changes: EdgeChange[]) => void;
  onConnect: (connection: Connection) => void;
  onDrop: (event: DragEvent) => void;
}

function allowDrop(event: DragEvent) {
  event.preventDefault();
  event.dataTransfer.dropEffect = "move";
}

/** The canvas keeps a drag in progress to itself, so a frame of a drag renders the canvas
 * alone (the builder, its toolbar, palette and side panel, render when the block is let go). */
function FlowCanvasView({ nodes, edges, info, load, onNodesChange, onEdgesChange, onConnect, onDrop }: Props) {
  const [dragged, setDragged] = useState<DragPositions | null>(null);
  // The same, as of the last change (for the handler: it runs before the next render).
  const latest = useRef<DragPositions | null>(null);
  const onChanges = useCallback((changes: NodeChange<BlockNode>[]) => {
    const routed = route(changes, latest.current);
    if (routed.dragged !== latest.current) {
      latest.current = routed.dragged;
      setDragged(routed.dragged);
    }
    if (routed.toGraph) onNodesChange(routed.toGraph);
  }, [onNodesChange]);
  const shown = useMemo(() => withDragged(nodes, dragged), [nodes, dragged]);
  const fitted = useFitOnLoad(load, nodes);
  return (
    <div className="wf-canvas" data-fit={fitted ? "done" : "pending"} onDragOver={allowDrop} onDrop={onDrop}>
      <CanvasContext.Provider value={info}>
        <ReactFlow<BlockNode>
          nodes={shown}
          edges={edges}
          nodeTypes={NODE_TYPES}
          onNodesChange={onChanges}
          onEdgesChange={onEdgesChange}
          onConnect={onConnect}
          deleteKeyCode={DELETE_KEYS}
          // The first graph is fitted by React Flow's own prop; each later load by useFitOnLoad.
          // (Fitting the first one in the hook instead made the drag bench's frames slower,
          // 10-12 ms of work against 14-17 at p50: not understood, but measured.)
          fitView
          fitViewOptions={FIT_OPTIONS}
          proOptions={PRO_OPTIONS}
          aria-label="Workflow canvas"
        >
          <Background />
          <Controls />
          <MiniMap pannable zoomable ariaLabel="Minimap" />
        </ReactFlow>
      </CanvasContext.Provider>
    </div>
  );
}

export const FlowCanvas = memo(FlowCanvasView);
