/** Shapes of the workflow API (atrium/workflows/dsl.py and atrium/api/workflows.py). */

/** A JSON Schema, as far as the builder reads it. */
export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  enum?: unknown[];
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
  anyOf?: JsonSchema[];
  allOf?: JsonSchema[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  minProperties?: number;
}

/** One entry of GET /v1/workflows/blocks. */
export interface BlockInfo {
  type: string;
  title: string;
  description: string;
  category: string;
  kind: string;
  config_schema: JsonSchema;
}

export interface PortSpec {
  type?: string;
  required?: boolean;
  default?: unknown;
  description?: string;
}

export interface NodeSpec {
  id: string;
  type: string;
  name?: string | null;
  config?: Record<string, unknown>;
  position?: { x: number; y: number } | null;
  // Policies the builder keeps as they are (retry, timeout, error strategy).
  [key: string]: unknown;
}

export interface EdgeSpec {
  id?: string | null;
  source: string;
  source_handle: string;
  target: string;
  target_handle?: string | null;
}

export interface WorkflowDefinition {
  schema_version?: 1;
  name: string;
  description?: string;
  inputs?: Record<string, PortSpec>;
  outputs?: Record<string, { source: string; description?: string }>;
  variables?: Record<string, unknown>;
  nodes: NodeSpec[];
  edges: EdgeSpec[];
  tags?: string[];
}

/** One problem of POST /v1/workflows/validate. */
export interface Problem {
  node: string | null;
  field: string;
  message: string;
}

export interface Workflow {
  id: string;
  name: string;
  description: string;
  published_version: number | null;
  draft: WorkflowDefinition;
}

export type RunStatus =
  | "pending" | "running" | "waiting" | "succeeded" | "failed" | "cancelled" | "skipped";

/** A block's record in a run. */
export interface NodeRun {
  node_id: string;
  block_type: string;
  status: string;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown>;
  error: string | null;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  tokens: number;
  cost_usd: number;
}

export interface Run {
  id: string;
  workflow: string;
  version: number;
  status: string;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown> | null;
  error: string | null;
  tokens: number;
  cost_usd: number;
  created_at: string;
  finished_at: string | null;
}

export interface TemplateSummary {
  id: string;
  title: string;
  description: string;
  category: string;
  /** The block types the workflow uses, in order, without start and end. */
  blocks?: string[];
  parameters: Record<string, { description?: string; default?: unknown; required?: boolean }>;
  schedule?: { cron: string; timezone: string } | null;
}

export interface TemplateDetail extends TemplateSummary {
  definition: Omit<WorkflowDefinition, "name"> & { name?: string };
}

/** One entry of GET /v1/workflows/{workflow}/versions. */
export interface VersionInfo {
  id: string;
  version: number;
  note: string;
  created_by: string | null;
  created_at: string;
}

/** GET /v1/workflows/{workflow}/diff (null: the draft). */
export interface VersionDiff {
  from: number | null;
  to: number | null;
  nodes_added: string[];
  nodes_removed: string[];
  nodes_changed: Record<string, string[]>;
  edges_added: string[];
  edges_removed: string[];
  fields_changed: string[];
  unified: string;
}
