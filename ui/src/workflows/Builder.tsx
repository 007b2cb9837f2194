/** The workflow builder: palette, canvas (React Flow) and side panel over the workflow API. */
import {
  type Connection, type EdgeChange, type NodeChange, ReactFlowProvider, applyEdgeChanges, applyNodeChanges,
  useReactFlow,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./builder.css";
import { useQueryClient } from "@tanstack/react-query";
import { type DragEvent, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { describeError } from "../api/client";
import { useMe } from "../api/queries";
import {
  decide, fetchTemplate, fetchVersion, fetchWorkflow, followRun, saveAndPublish, saveDraft, startRun,
  useBlocks, useWorkflows, validate, workflowKeys,
} from "./api";
import type { CanvasInfo } from "./BlockNode";
import { type DraftBase, readDraft, writeDraft } from "./drafts";
import { FlowCanvas } from "./FlowCanvas";
import {
  type BlockNode, definitionToGraph, edgeId, emptyDefinition, fillTemplate,
  graphToDefinition, newNodeId,
} from "./graph";
import { DRAG_TYPE, Palette } from "./Palette";
import { CONTROL_IN, connectionProblem } from "./ports";
import { variablesFor } from "./references";
import { RunPanel } from "./RunPanel";
import { ShortcutsHelp } from "./ShortcutsHelp";
import { NodePanel } from "./SidePanel";
import { TemplatePanel } from "./TemplatePanel";
import { Toolbar } from "./Toolbar";
import type { NodeRun, NodeSpec, PortSpec, Problem, Run, TemplateDetail, WorkflowDefinition } from "./types";
import { useGraphHistory } from "./useGraphHistory";
import { usePorts } from "./usePorts";
import { useShortcuts } from "./useShortcuts";
import { VersionsPanel } from "./VersionsPanel";
import { fromYaml, toYaml } from "./yamlio";

const VALIDATE_DELAY_MS = 400;

type Panel = { kind: "run" } | { kind: "history" } | { kind: "shortcuts" } | { kind: "template"; template: TemplateDetail };

/** The text a definition is compared by (what was saved, what was published). */
const textOf = (definition: WorkflowDefinition) => JSON.stringify(graphToDefinition(definitionToGraph(definition)));

function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/yaml" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: `${name}.yaml` });
  link.click();
  URL.revokeObjectURL(url);
}

/** Problems from the server, by node id (null: the workflow's own). */
function byNode(problems: Problem[]): Map<string, Problem[]> {
  const map = new Map<string, Problem[]>();
  for (const p of problems) if (p.node) map.set(p.node, [...(map.get(p.node) ?? []), p]);
  return map;
}

function useValidation(definition: WorkflowDefinition): Problem[] {
  const [problems, setProblems] = useState<Problem[]>([]);
  const text = JSON.stringify(definition);
  useEffect(() => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      validate(JSON.parse(text) as WorkflowDefinition, controller.signal)
        // The same problems keep their identity: every block on the canvas reads them.
        .then((found) => setProblems((old) => (JSON.stringify(old) === JSON.stringify(found) ? old : found)))
        .catch((error: unknown) => {
          if (!controller.signal.aborted) setProblems([{ node: null, field: "validate", message: describeError(error) }]);
        });
    }, VALIDATE_DELAY_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [text]);
  return problems;
}

function useRunner(name: string) {
  const [run, setRun] = useState<Run | null>(null);
  const [nodeRuns, setNodeRuns] = useState<Map<string, NodeRun>>(new Map());
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const abort = useRef<AbortController | null>(null);
  useEffect(() => () => abort.current?.abort(), []);

  const start = useCallback(async (inputs: Record<string, unknown>) => {
    abort.current?.abort();
    const controller = new AbortController();
    abort.current = controller;
    setRunning(true);
    setError(null);
    setNodeRuns(new Map());
    try {
      const created = await startRun(name, inputs);
      setRun(created);
      await followRun(created.id, controller.signal, (event) => {
        const node = event.node;
        if (node) setNodeRuns((old) => new Map(old).set(node.node_id, node));
        if (event.run) setRun(event.run);
      });
    } catch (caught) {
      if (!controller.signal.aborted) setError(describeError(caught));
    } finally {
      if (abort.current === controller) setRunning(false);
    }
  }, [name]);
  const decideOn = useCallback(async (nodeId: string, approved: boolean, comment: string) => {
    if (!run) return;
    await decide(run.id, nodeId, approved, comment);
    // The decision shows when the event stream reports the block again.
    setNodeRuns((old) => new Map(old).set(nodeId, { ...(old.get(nodeId) as NodeRun), status: "running" }));
  }, [run]);
  // Another graph was loaded: the last run's statuses and result belong to the old one.
  const clear = useCallback(() => {
    abort.current?.abort();
    abort.current = null;
    setRun(null);
    setNodeRuns(new Map());
    setError(null);
    setRunning(false);
  }, []);
  return { run, nodeRuns, error, running, start, decide: decideOn, clear };
}

/** The blocks' specs: the same array while no spec changed (a drag moves positions only),
 * so the ports and what every node reads are not rebuilt on each frame of a drag. */
function useSpecs(nodes: BlockNode[]): NodeSpec[] {
  const last = useRef<NodeSpec[]>([]);
  const next = nodes.map((n) => n.data.spec);
  if (next.length !== last.current.length || next.some((spec, i) => spec !== last.current[i])) last.current = next;
  return last.current;
}

function BuilderCanvas() {
  const blocks = useBlocks();
  const workflows = useWorkflows();
  const queryClient = useQueryClient();
  const flow = useReactFlow();
  // The draft kept in this browser comes back after a reload or a new sign-in (the
  // builder only renders for a signed-in user, so who it is is known here).
  const me = useMe();
  const [user] = useState(() => me.data?.username ?? "");
  const [restored] = useState(() => readDraft(window.localStorage, user));
  const { graph, present, change, undo, redo, reset, canUndo, canRedo } = useGraphHistory(
    () => definitionToGraph(restored?.definition ?? emptyDefinition("my-workflow")),
  );
  const [saved, setSaved] = useState<DraftBase | null>(restored?.base ?? null);
  const [notice, setNotice] = useState<string | null>(restored ? "Your draft was restored from this browser." : null);
  const [busy, setBusy] = useState<"publishing" | "saving" | null>(null);
  const [panel, setPanel] = useState<Panel>({ kind: "run" });
  // Raised by each load (a graph opened, imported, started from a template or new): the
  // canvas fits its view to the graph once per value.
  const [loads, setLoads] = useState(0);
  // From the recorded graph: a drag changes the definition once, at its end, not each frame
  // (nothing that is not recorded changes the definition: selections, drags in progress).
  const definition = useMemo(() => graphToDefinition(present), [present]);
  const text = useMemo(() => JSON.stringify(definition), [definition]);
  const problems = useValidation(definition);
  const runner = useRunner(saved?.version ? graph.meta.name : "");
  const clearRun = runner.clear;
  const exists = (workflows.data ?? []).some((w) => w.name === graph.meta.name);
  const unsaved = saved?.text !== text;
  const unpublished = saved?.publishedText !== text;

  // Written at once (not debounced): a session that expires right after an edit unmounts
  // the builder, and the edit must already be kept.
  useEffect(() => writeDraft(window.localStorage, user, text, saved), [user, text, saved]);

  const inputs = useMemo(() => (graph.meta.inputs ?? {}) as Record<string, PortSpec>, [graph.meta.inputs]);
  const specs = useSpecs(graph.nodes);
  const ports = usePorts(specs, inputs);
  const info: CanvasInfo = useMemo(() => ({
    ports: (id) => ports.get(id),
    problems: byNode(problems),
    runs: runner.nodeRuns,
    titles: new Map((blocks.data ?? []).map((b) => [b.type, b.title])),
  }), [ports, problems, runner.nodeRuns, blocks.data]);

  const load = useCallback((next: WorkflowDefinition, base: DraftBase | null, message: string | null = null) => {
    const loaded = definitionToGraph(next);
    reset(loaded);
    setSaved(base);
    setNotice(message);
    setPanel({ kind: "run" });
    setLoads((n) => n + 1);
    clearRun();
  }, [reset, clearRun]);

  const addBlock = useCallback((type: string, position?: { x: number; y: number }) => {
    const at = position ?? flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
    change((live) => {
      const id = newNodeId(type, live.nodes.map((n) => n.id));
      const node: BlockNode = { id, type: "block", position: at, data: { spec: { id, type, config: {} } }, selected: true };
      return { ...live, nodes: [...live.nodes.map((n) => ({ ...n, selected: false })), node] };
    });
  }, [change, flow]);

  const onNodesChange = useCallback((changes: NodeChange<BlockNode>[]) => {
    // Selection is not a step to undo; a drag's end and removals are (the canvas keeps the
    // frames of a drag to itself, see FlowCanvas).
    const record = changes.some((c) => c.type === "remove" || c.type === "add" || (c.type === "position" && c.dragging === false));
    const removed = new Set(changes.flatMap((c) => (c.type === "remove" ? [c.id] : [])));
    change((live) => ({
      ...live,
      nodes: applyNodeChanges(changes, live.nodes),
      edges: removed.size ? live.edges.filter((e) => !removed.has(e.source) && !removed.has(e.target)) : live.edges,
    }), record);
  }, [change]);

  const onEdgesChange = useCallback((changes: EdgeChange[]) => {
    change((live) => ({ ...live, edges: applyEdgeChanges(changes, live.edges) }), changes.some((c) => c.type === "remove"));
  }, [change]);

  const onConnect = useCallback((connection: Connection) => {
    const wanted = { ...connection, sourceHandle: connection.sourceHandle ?? "done", targetHandle: connection.targetHandle ?? CONTROL_IN };
    const problem = connectionProblem(wanted, info.ports, definition.edges);
    if (problem) {
      setNotice(`Connection refused: ${problem}`);
      return;
    }
    setNotice(null);
    const spec = { source: wanted.source, source_handle: wanted.sourceHandle, target: wanted.target, target_handle: wanted.targetHandle === CONTROL_IN ? null : wanted.targetHandle };
    change((live) => ({ ...live, edges: [...live.edges, { id: edgeId(spec), ...wanted }] }));
  }, [info, definition.edges, change]);

  const onDrop = useCallback((event: DragEvent) => {
    event.preventDefault();
    const type = event.dataTransfer.getData(DRAG_TYPE);
    if (type) addBlock(type, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
  }, [addBlock, flow]);

  const saveToServer = useCallback(async () => {
    setBusy("saving");
    try {
      const record = await saveDraft(definition, exists);
      setSaved((old) => ({ text, version: record.published_version, publishedText: old?.publishedText ?? null }));
      setNotice("Draft saved.");
      await queryClient.invalidateQueries({ queryKey: workflowKeys.list });
    } catch (caught) {
      setNotice(`Not saved: ${describeError(caught)} (the draft is kept in this browser).`);
    } finally {
      setBusy(null);
    }
  }, [definition, exists, text, queryClient]);

  useShortcuts({ graph, change, undo, redo, save: saveToServer, help: () => setPanel({ kind: "shortcuts" }), notify: setNotice });

  const selected = graph.nodes.filter((n) => n.selected);
  const node = selected.length === 1 ? selected[0] : null;
  const updateSpec = (id: string, patch: Partial<BlockNode["data"]["spec"]>) =>
    change({ ...graph, nodes: graph.nodes.map((n) => (n.id === id ? { ...n, data: { spec: { ...n.data.spec, ...patch } } } : n)) });

  async function publish() {
    setBusy("publishing");
    setNotice(null);
    try {
      const version = await saveAndPublish(definition, exists);
      setSaved({ text, version, publishedText: text });
      setNotice(`Published version ${version}.`);
      await queryClient.invalidateQueries({ queryKey: workflowKeys.list });
    } catch (caught) {
      setNotice(`Not published: ${describeError(caught)}`);
    } finally {
      setBusy(null);
    }
  }

  async function openWorkflow(name: string) {
    const found = await fetchWorkflow(name);
    const published = found.published_version ? await fetchVersion(name, found.published_version) : null;
    const base = { text: textOf(found.draft), version: found.published_version, publishedText: published && textOf(published.definition) };
    load(found.draft, base);
  }

  function startFromTemplate(template: TemplateDetail, values: Record<string, unknown>) {
    const parameters = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, { default: v }]));
    const filled = fillTemplate(template.definition, parameters) as WorkflowDefinition;
    load({ ...filled, name: filled.name ?? template.id }, null, `Started from the template ${template.title}.`);
  }

  async function guarded(action: () => Promise<void>) {
    try {
      await action();
    } catch (caught) {
      setNotice(describeError(caught));
    }
  }

  const whyNot = !saved?.version
    ? "Publish the workflow to run it."
    : unpublished ? "Runs use the published version: publish your changes to run them." : null;
  const where = saved?.version ? `v${saved.version} published` : "not published";
  const status = !unpublished ? where : !unsaved ? `Draft saved · ${where}` : `Unsaved changes (kept in this browser) · ${where}`;
  const variables = node ? variablesFor(node.id, graph.edges, ports, new Map(specs.map((n) => [n.id, n.type])), inputs, graph.meta.variables) : [];
  const waiting = [...runner.nodeRuns.values()].filter((n) => n.status === "waiting" && n.block_type === "approval");

  if (blocks.isPending) return <p className="center-screen muted" role="status"><span className="spinner" aria-hidden="true" /> Loading blocks…</p>;
  if (blocks.isError) return <p className="center-screen error" role="alert">The block catalogue could not be loaded: {describeError(blocks.error)}</p>;

  return (
    <div className="wf-builder">
      <Toolbar
        name={graph.meta.name}
        onName={(name) => change({ ...graph, meta: { ...graph.meta, name } })}
        workflows={workflows.data ?? []}
        onOpen={(name) => void guarded(() => openWorkflow(name))}
        onTemplate={(id) => void guarded(async () => {
          const template = await fetchTemplate(id);
          if (Object.keys(template.parameters ?? {}).length) setPanel({ kind: "template", template });
          else startFromTemplate(template, {});
        })}
        onNew={() => load(emptyDefinition("my-workflow"), null)}
        onImport={(yamlText) => void guarded(async () => load(fromYaml(yamlText), null))}
        onExport={() => download(graph.meta.name || "workflow", toYaml(definition))}
        undo={{ can: canUndo, run: undo }}
        redo={{ can: canRedo, run: redo }}
        onPublish={() => void publish()}
        onSave={() => void saveToServer()}
        busy={busy}
        onHistory={() => setPanel({ kind: "history" })}
        onShortcuts={() => setPanel({ kind: "shortcuts" })}
        status={status}
      />
      {notice && <p className="wf-notice" role="alert" data-testid="builder-notice">{notice}</p>}
      <div className="wf-body">
        <Palette blocks={blocks.data} onAdd={(type) => addBlock(type)} />
        <FlowCanvas
          nodes={graph.nodes}
          edges={graph.edges}
          info={info}
          load={loads}
          onNodesChange={onNodesChange}
          onEdgesChange={onEdgesChange}
          onConnect={onConnect}
          onDrop={onDrop}
        />
        <aside className="wf-side">
          {panel.kind === "history" ? (
            <VersionsPanel
              name={graph.meta.name}
              exists={exists}
              publishedVersion={saved?.version ?? null}
              onClose={() => setPanel({ kind: "run" })}
              onRestore={(restoredDefinition, version) => {
                change(definitionToGraph({ ...restoredDefinition, name: graph.meta.name }));
                setNotice(`Version ${version} is in the canvas: publish to make it the live version again.`);
              }}
            />
          ) : panel.kind === "shortcuts" ? (
            <ShortcutsHelp onClose={() => setPanel({ kind: "run" })} />
          ) : panel.kind === "template" ? (
            <TemplatePanel
              template={panel.template}
              onCreate={(values) => startFromTemplate(panel.template, values)}
              onCancel={() => setPanel({ kind: "run" })}
            />
          ) : node ? (
            <NodePanel
              key={node.id}
              node={node.data.spec}
              block={blocks.data.find((b) => b.type === node.data.spec.type)}
              problems={info.problems.get(node.id) ?? []}
              run={runner.nodeRuns.get(node.id)}
              workflowInputs={inputs}
              onConfig={(config) => updateSpec(node.id, { config })}
              onInputs={(next) => change({ ...graph, meta: { ...graph.meta, inputs: next } })}
              variables={variables}
              onDecide={runner.decide}
            />
          ) : (
            <RunPanel
              inputs={inputs}
              problems={problems}
              run={runner.run}
              runError={runner.error}
              canRun={whyNot === null}
              whyNot={whyNot}
              running={runner.running}
              onRun={(values) => void runner.start(values)}
              waiting={waiting}
              onDecide={runner.decide}
            />
          )}
        </aside>
      </div>
    </div>
  );
}

/** The builder page (lazy-loaded: React Flow is only fetched by people who open it). */
export default function Builder() {
  return (
    <ReactFlowProvider>
      <BuilderCanvas />
    </ReactFlowProvider>
  );
}
