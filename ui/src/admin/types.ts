/** The admin API's shapes, as atrium/api/*.py answers them. */

export type ReleaseStatus = "running" | "paused" | "succeeded" | "failed" | "rolled_back" | "aborted";

export interface TimelineEntry {
  stage: string;
  status: string;
  at: string;
  event?: string;
  reasons?: string[];
  metrics?: Record<string, unknown>;
  [extra: string]: unknown;
}

export interface Release {
  object: "release";
  id: string;
  model: string;
  version: number | null;
  source: string;
  release_id: string | null;
  uri: string;
  status: ReleaseStatus | string;
  stage: string;
  reason: string | null;
  weight: number;
  timeline: TimelineEntry[];
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  seconds_to_production: number | null;
}

export type ReleaseAction = "pause" | "resume" | "abort" | "promote" | "rollback" | "approve";

export interface Replica {
  index: number;
  state: "starting" | "ready" | "unhealthy" | "restarting" | "draining" | "stopped" | string;
  base_url: string | null;
  pid: number | null;
  restarts: number;
  last_exit_code: number | null;
  in_flight: number;
}

export interface Deployment {
  object: "deployment";
  name: string;
  model: string;
  version: number | string;
  runtime: string;
  desired: number;
  ready: number;
  replicas: Replica[];
  bounds: { min: number; max: number };
  allocation: Record<string, unknown>;
  autoscaling: Record<string, unknown>;
}

export interface RegistryModel {
  id: string;
  name: string;
  description: string | null;
  created_at: string;
  updated_at: string;
}

export interface RegistryVersion {
  id: string;
  version: number;
  status: string;
  format: string;
  artifact_uri: string;
  sha256: string;
  size_bytes: number;
  metadata: Record<string, unknown>;
  tags: string[];
  created_at: string;
}

export interface RegistryModelView extends RegistryModel {
  versions: RegistryVersion[];
  aliases: Record<string, number>;
}

export interface ArmNumbers {
  arm: string;
  requests: number;
  errors: number;
  error_rate: number;
  p95_latency_ms: number | null;
  p95_ttft_ms: number | null;
  tokens: number;
  feedback_up: number;
  feedback_down: number;
}

export interface ExperimentVerdict {
  outcome: string;
  winner: string | null;
  text: string;
  findings: string[];
  alpha: number;
  [extra: string]: unknown;
}

export interface Experiment {
  object: "experiment";
  id: string;
  name: string;
  status: string;
  spec: { a: string; b: string; split: number; sticky: string; alpha: number; [k: string]: unknown };
  started_at: number;
  ended_at: number | null;
  verdict: ExperimentVerdict | null;
  arms?: ArmNumbers[];
}

export interface ApiKey {
  id: string;
  name: string;
  owner: string;
  display_prefix: string;
  scopes: string[];
  allowed_models: string[] | null;
  rpm: number | null;
  tpm: number | null;
  budget_usd: number | null;
  budget_period: string | null;
  team: { id: string; name: string } | null;
  expires_at: string | null;
  revoked_at: string | null;
  created_at: string;
}

export interface NewApiKey extends ApiKey {
  key: string;
}

export interface UsageLine {
  group: string;
  label: string;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  spend_usd: number;
  /** Set when the report is split by day (`per_day=true`). */
  day?: string | null;
}

export interface ConsoleUser {
  object: "user";
  id: string;
  username: string;
  display_name: string;
  role: "admin" | "builder" | "user";
  scopes: string[];
  disabled: boolean;
  disabled_at: string | null;
  last_login_at: string | null;
  created_at: string;
}

/** A provider subject a user is bound to (`GET /v1/admin/users/{id}/identities`): bound at
 * the first OpenID Connect sign-in, and followed by later ones even when the e-mail changes. */
export interface UserIdentity {
  issuer: string;
  subject: string;
  created_at: string;
}

/** The answer of `DELETE /v1/admin/users/{id}/identities`. */
export interface Unbound {
  object: "user.identities";
  user_id: string;
  deleted: number;
}

export interface Team {
  id: string;
  name: string;
  rpm: number | null;
  tpm: number | null;
  max_parallel: number | null;
  budget_usd: number | null;
  budget_period: string | null;
  created_at: string;
}

export interface KnowledgeBaseSummary {
  id: string;
  object: "knowledge_base";
  name: string;
  description: string;
  embedder: string | null;
  created_at: string;
}

export interface KnowledgeSource {
  id: string;
  name: string;
  connector: { kind?: string; [k: string]: unknown };
  access_groups: string[] | null;
  sync_interval_minutes: number | null;
  status: string;
  last_error: string | null;
  last_sync_at: string | null;
  documents: number;
  failed_documents: number;
}

export interface KnowledgeBase extends KnowledgeBaseSummary {
  documents: number;
  failed_documents: number;
  chunks: number;
  updated_at: string;
}

export interface KnowledgeDocument {
  id: string;
  source_id: string;
  key: string;
  title: string;
  status: string;
  reason: string | null;
  doc_type: string;
  chunks: number;
  uri: string;
  updated_at: string;
}

export interface WorkflowRun {
  id: string;
  object: "workflow.run";
  workflow_id: string;
  workflow: string;
  version: number;
  status: string;
  inputs: Record<string, unknown>;
  outputs: Record<string, unknown> | null;
  error: string | null;
  trigger: string | null;
  parent_run_id: string | null;
  tokens: number;
  cost_usd: number;
  created_at: string;
  finished_at: string | null;
}

export interface WorkflowRunNode {
  node_id: string;
  block_type: string;
  status: string;
  inputs: Record<string, unknown> | null;
  outputs: Record<string, unknown> | null;
  error: string | null;
  attempts: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  tokens: number;
  cost_usd: number;
}

export interface WorkflowRunDetail extends WorkflowRun {
  nodes: WorkflowRunNode[];
}

export interface AuditEntry {
  seq: number;
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  address: string;
  outcome: string;
  detail: Record<string, unknown> | null;
}

export interface Readiness {
  status: string;
  store: string;
  models: Record<string, { ready: boolean; detail: string }>;
}

export interface Alert {
  rule: string;
  state: string;
  severity: string;
  summary: string;
  value: number | null;
  labels: Record<string, string>;
  started_at: string;
  fired_at: string | null;
  resolved_at: string | null;
}

export interface Alerts {
  firing: Alert[];
  pending: Alert[];
  resolved: Alert[];
  deliveries: Record<string, unknown>[];
}

export interface BusGroup {
  name: string;
  consumers: number;
  live_consumers: number;
  pending: number;
  lag: number | null;
  last_delivered_id: string;
}

export interface BusStream {
  topic: string;
  length: number;
  groups: BusGroup[];
}
