/** The workflow API through react-query, and a run's live events over SSE. */
import { useQuery } from "@tanstack/react-query";
import { apiFetch, apiJson } from "../api/client";
import { SseParser, StreamError } from "../api/sse";
import type { ListOf } from "../api/types";
import type { PortsAnswer } from "./ports";
import type {
  BlockInfo, NodeRun, Problem, Run, TemplateDetail, TemplateSummary, VersionDiff, VersionInfo, Workflow,
  WorkflowDefinition,
} from "./types";

export const workflowKeys = {
  blocks: ["workflows", "blocks"] as const,
  templates: ["workflows", "templates"] as const,
  list: ["workflows", "list"] as const,
};

const list = async <T,>(path: string, init?: RequestInit) => (await apiJson<ListOf<T>>(path, init)).data;
const path = (name: string) => `/v1/workflows/${encodeURIComponent(name)}`;

export function useBlocks() {
  // The catalogue changes only with a new server version.
  return useQuery({ queryKey: workflowKeys.blocks, queryFn: () => list<BlockInfo>("/v1/workflows/blocks"), staleTime: Infinity });
}

export function useTemplates() {
  return useQuery({ queryKey: workflowKeys.templates, queryFn: () => list<TemplateSummary>("/v1/workflows/templates"), staleTime: Infinity });
}

export function useWorkflows() {
  return useQuery({ queryKey: workflowKeys.list, queryFn: () => list<Workflow>("/v1/workflows") });
}

export const fetchTemplate = (id: string) =>
  apiJson<TemplateDetail>(`/v1/workflows/templates/${encodeURIComponent(id)}`);

export const fetchWorkflow = (name: string) => apiJson<Workflow>(path(name));

/** How many blocks one ports request carries (the server's MAX_PORTS_BATCH). */
const PORTS_BATCH = 500;

/** The typed ports each block's config gives, in order (an `error` where it gives none). */
export async function fetchPorts(blocks: { type: string; config?: Record<string, unknown> }[]): Promise<PortsAnswer[]> {
  const out: PortsAnswer[] = [];
  for (let at = 0; at < blocks.length; at += PORTS_BATCH) {
    const body = JSON.stringify({ blocks: blocks.slice(at, at + PORTS_BATCH).map((b) => ({ type: b.type, config: b.config ?? {} })) });
    out.push(...(await list<PortsAnswer>("/v1/workflows/ports/batch", { method: "POST", body })));
  }
  return out;
}

export async function validate(definition: WorkflowDefinition, signal?: AbortSignal): Promise<Problem[]> {
  const body = await apiJson<{ valid: boolean; problems: Problem[] }>("/v1/workflows/validate", {
    method: "POST", body: JSON.stringify(definition), signal,
  });
  return body.problems;
}

/** Save the draft on the server: create the workflow, or replace its draft. */
export async function saveDraft(definition: WorkflowDefinition, exists: boolean): Promise<Workflow> {
  const body = JSON.stringify(definition);
  if (exists) return apiJson<Workflow>(path(definition.name), { method: "PUT", body });
  return apiJson<Workflow>("/v1/workflows", { method: "POST", body });
}

/** Save the draft (create or replace) and publish it; the new version number. */
export async function saveAndPublish(definition: WorkflowDefinition, exists: boolean, note = ""): Promise<number> {
  await saveDraft(definition, exists);
  const version = await apiJson<{ version: number }>(`${path(definition.name)}/publish`, {
    method: "POST", body: JSON.stringify({ note: note || "Published from the builder" }),
  });
  return version.version;
}

export const fetchVersions = (name: string) => list<VersionInfo>(`${path(name)}/versions`);

export const fetchVersion = (name: string, version: number) =>
  apiJson<{ version: number; definition: WorkflowDefinition }>(`${path(name)}/versions/${version}`);

/** What changed from one version to another (null: the server's draft). */
export function fetchDiff(name: string, from: number | null, to: number | null): Promise<VersionDiff> {
  const query = new URLSearchParams();
  if (from !== null) query.set("from", String(from));
  if (to !== null) query.set("to", String(to));
  return apiJson<VersionDiff>(`${path(name)}/diff?${query}`);
}

/** Approve or reject a run's waiting approval block. */
export const decide = (runId: string, nodeId: string, approved: boolean, comment: string) =>
  apiJson<Run>(`/v1/workflows/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(nodeId)}`, {
    method: "POST", body: JSON.stringify({ approved, comment }),
  });

export const startRun = (name: string, inputs: Record<string, unknown>) =>
  apiJson<Run>(`${path(name)}/runs`, { method: "POST", body: JSON.stringify({ inputs, mode: "async" }) });

export type RunEvent = { event: string; node?: NodeRun; run?: Run };

/** Follow a run's events until it ends; `onEvent` sees each one. */
export async function followRun(runId: string, signal: AbortSignal, onEvent: (event: RunEvent) => void): Promise<void> {
  const response = await apiFetch(`/v1/workflows/runs/${encodeURIComponent(runId)}/events`, { signal });
  if (!response.body) throw new StreamError("The run's event stream had no body.");
  const reader = response.body.getReader();
  const parser = new SseParser();
  for (;;) {
    const read = await reader.read();
    for (const event of read.done ? parser.flush() : parser.push(read.value)) {
      const parsed = JSON.parse(event.data) as RunEvent;
      onEvent(parsed);
      if (parsed.event.startsWith("run.") && parsed.run) return;
    }
    if (read.done) throw new StreamError("The connection dropped before the run ended.");
  }
}
