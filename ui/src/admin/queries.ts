/** The admin API through react-query: the session cookie on every call, CSRF on changes. */
import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { apiJson } from "../api/client";
import type { ListOf } from "../api/types";
import { isEnded } from "./format";
import type {
  Alerts, ApiKey, AuditEntry, BusStream, ConsoleUser, Deployment, Experiment, KnowledgeBase,
  KnowledgeBaseSummary, KnowledgeDocument, KnowledgeSource, NewApiKey, Readiness, RegistryModel,
  RegistryModelView, Release, ReleaseAction, Team, Unbound, UsageLine, UserIdentity, WorkflowRun, WorkflowRunDetail,
} from "./types";
import { loadedRuns, nextRunsCursor, runsPath, type RunsPage } from "./runs";
import { lastDays, linesByDay, type UsageGroup } from "./usage";

/** How often live screens refresh while something is moving. */
export const POLL_MS = 2_000;
/** Keys the web UI makes for its own sessions: not for people to manage. */
export const SESSION_KEY_NAME = "web session";

export const adminKeys = {
  releases: ["admin", "releases"] as const,
  release: (id: string) => ["admin", "release", id] as const,
  deployments: ["admin", "deployments"] as const,
  models: ["admin", "models"] as const,
  model: (name: string) => ["admin", "model", name] as const,
  experiments: ["admin", "experiments"] as const,
  experiment: (name: string) => ["admin", "experiment", name] as const,
  apiKeys: ["admin", "keys"] as const,
  usage: (group: UsageGroup, days: number) => ["admin", "usage", group, days] as const,
  users: ["admin", "users"] as const,
  identities: (userId: string) => ["admin", "identities", userId] as const,
  teams: ["admin", "teams"] as const,
  knowledgeBases: ["admin", "kbs"] as const,
  knowledgeBase: (kb: string) => ["admin", "kb", kb] as const,
  runs: (workflow: string, status: string) => ["admin", "runs", workflow, status] as const,
  run: (id: string) => ["admin", "run", id] as const,
  audit: (filter: AuditQuery) => ["admin", "audit", filter] as const,
  health: ["admin", "health"] as const,
};

const list = async <T,>(path: string) => (await apiJson<ListOf<T>>(path)).data;
const post = <T,>(path: string, body?: unknown) =>
  apiJson<T>(path, { method: "POST", body: body === undefined ? undefined : JSON.stringify(body) });

export function useReleases() {
  return useQuery({
    queryKey: adminKeys.releases,
    queryFn: () => list<Release>("/v1/releases"),
    refetchInterval: (query) => (query.state.data?.some((r) => !isEnded(r.status)) ? POLL_MS : false),
  });
}

export function useRelease(id: string) {
  return useQuery({
    queryKey: adminKeys.release(id),
    queryFn: () => apiJson<Release>(`/v1/releases/${encodeURIComponent(id)}`),
    refetchInterval: (query) => (query.state.data && isEnded(query.state.data.status) ? false : POLL_MS),
  });
}

export function useReleaseAction(id: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (action: ReleaseAction) =>
      post<Release>(`/v1/releases/${encodeURIComponent(id)}/${action}`),
    onSettled: () => {
      void client.invalidateQueries({ queryKey: adminKeys.release(id) });
      void client.invalidateQueries({ queryKey: adminKeys.releases });
    },
  });
}

export function useDeployments() {
  return useQuery({
    queryKey: adminKeys.deployments,
    queryFn: () => list<Deployment>("/v1/deployments"),
    // Replicas start and stop on their own: keep the health current while it changes.
    refetchInterval: (query) =>
      query.state.data?.some((d) => d.ready !== d.desired || d.replicas.some((r) => r.state !== "ready"))
        ? POLL_MS
        : 10_000,
  });
}

export function useScale(name: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (replicas: number) =>
      post<Deployment>(`/v1/deployments/${encodeURIComponent(name)}/scale`, { replicas }),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.deployments }),
  });
}

export function useRegistryModels() {
  return useQuery({ queryKey: adminKeys.models, queryFn: () => list<RegistryModel>("/v1/registry/models") });
}

export function useRegistryModel(name: string | null) {
  return useQuery({
    queryKey: adminKeys.model(name ?? ""),
    queryFn: () => apiJson<RegistryModelView>(`/v1/registry/models/${encodeURIComponent(name ?? "")}`),
    enabled: Boolean(name),
  });
}

export function useExperiments() {
  return useQuery({ queryKey: adminKeys.experiments, queryFn: () => list<Experiment>("/v1/experiments") });
}

export function useExperiment(name: string) {
  return useQuery({
    queryKey: adminKeys.experiment(name),
    queryFn: () => apiJson<Experiment>(`/v1/experiments/${encodeURIComponent(name)}`),
    refetchInterval: (query) => (query.state.data?.status === "running" ? 5_000 : false),
  });
}

export function useStopExperiment(name: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (keep: "a" | "b" | "winner") =>
      post<Experiment>(`/v1/experiments/${encodeURIComponent(name)}/stop`, { keep }),
    onSuccess: (experiment) => {
      client.setQueryData(adminKeys.experiment(name), experiment);
      void client.invalidateQueries({ queryKey: adminKeys.experiments });
    },
  });
}

export function useApiKeys() {
  return useQuery({
    queryKey: adminKeys.apiKeys,
    queryFn: async () => (await list<ApiKey>("/v1/admin/keys")).filter((k) => k.name !== SESSION_KEY_NAME),
  });
}

/** Every key's id -> who it is, for the audit log: a web session shows its user. */
export function useKeyNames() {
  return useQuery({
    queryKey: [...adminKeys.apiKeys, "names"],
    queryFn: async () =>
      new Map(
        (await list<ApiKey>("/v1/admin/keys")).map((k) => [
          k.id,
          k.name === SESSION_KEY_NAME && k.owner.startsWith("user:") ? `${k.owner.slice(5)} (web)` : k.name,
        ]),
      ),
    staleTime: 30_000,
  });
}

export function useCreateKey() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: {
      name: string; owner?: string; scopes: string[]; team?: string; rpm: number | null; tpm: number | null;
      budget_usd: number | null; budget_period: string | null;
    }) => post<NewApiKey>("/v1/admin/keys", body),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.apiKeys }),
  });
}

export function useRevokeKey() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (id: string) => apiJson<ApiKey>(`/v1/admin/keys/${encodeURIComponent(id)}`, { method: "DELETE" }),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.apiKeys }),
  });
}

/** Usage by `group` (model, key, team or user) for each of the last `days` days, in one
 * request (`per_day=true`: a line per group and day). */
export function useUsageByDay(group: UsageGroup, days: number) {
  return useQuery({
    queryKey: adminKeys.usage(group, days),
    queryFn: async () => {
      const window = lastDays(days, new Date());
      const q = `group_by=${group}&per_day=true&start=${window[0]}&end=${window[window.length - 1]}`;
      return { window, perDay: linesByDay(await list<UsageLine>(`/v1/admin/usage?${q}`)) };
    },
  });
}

export function useUsers() {
  return useQuery({ queryKey: adminKeys.users, queryFn: () => list<ConsoleUser>("/v1/admin/users") });
}

export function useCreateUser() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: { username: string; password: string; role: string; display_name: string }) =>
      post<ConsoleUser>("/v1/admin/users", body),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.users }),
  });
}

export function useUpdateUser() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: ({ id, ...changes }: { id: string; role?: string; disabled?: boolean }) =>
      apiJson<ConsoleUser>(`/v1/admin/users/${encodeURIComponent(id)}`, {
        method: "PATCH",
        body: JSON.stringify(changes),
      }),
    onSettled: () => client.invalidateQueries({ queryKey: adminKeys.users }),
  });
}

const identitiesPath = (userId: string) => `/v1/admin/users/${encodeURIComponent(userId)}/identities`;
/** One identity of a user (by its issuer and subject), or all of them. */
export const unbindPath = (userId: string, identity?: Pick<UserIdentity, "issuer" | "subject">) =>
  identity ? `${identitiesPath(userId)}?${new URLSearchParams({ issuer: identity.issuer, subject: identity.subject })}` : identitiesPath(userId);

/** The identity-provider subjects a user is bound to (asked when an admin opens the list). */
export function useUserIdentities(userId: string) {
  return useQuery({ queryKey: adminKeys.identities(userId), queryFn: () => list<UserIdentity>(identitiesPath(userId)) });
}

/** Forgets one subject a user is bound to (given), or all of them; their next sign-in with
 * the provider binds anew. */
export function useUnbindIdentities(userId: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (identity?: UserIdentity) => apiJson<Unbound>(unbindPath(userId, identity), { method: "DELETE" }),
    onSettled: () => client.invalidateQueries({ queryKey: adminKeys.identities(userId) }),
  });
}

export function useTeams() {
  return useQuery({ queryKey: adminKeys.teams, queryFn: () => list<Team>("/v1/admin/teams") });
}

export function useCreateTeam() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: Omit<Team, "id" | "created_at" | "max_parallel">) => post<Team>("/v1/admin/teams", body),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.teams }),
  });
}

export function useCreateExperiment() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: { name: string; a: string; b: string; split: number; alpha: number }) =>
      post<Experiment>("/v1/experiments", body),
    onSuccess: () => client.invalidateQueries({ queryKey: adminKeys.experiments }),
  });
}

export function useKnowledgeBases() {
  return useQuery({
    queryKey: adminKeys.knowledgeBases,
    queryFn: () => list<KnowledgeBaseSummary>("/v1/knowledge-bases"),
  });
}

export interface KnowledgeBaseView {
  kb: KnowledgeBase;
  sources: KnowledgeSource[];
  failed: KnowledgeDocument[];
}

/** A knowledge base with its sources' sync state and its failed documents; polled while
 * a source is syncing. */
export function useKnowledgeBase(kb: string) {
  return useQuery({
    queryKey: adminKeys.knowledgeBase(kb),
    queryFn: async (): Promise<KnowledgeBaseView> => {
      const path = `/v1/knowledge-bases/${encodeURIComponent(kb)}`;
      const [view, sources, failed] = await Promise.all([
        apiJson<KnowledgeBase>(path),
        list<KnowledgeSource>(`${path}/sources`),
        list<KnowledgeDocument>(`${path}/documents?status=failed`),
      ]);
      return { kb: view, sources, failed };
    },
    refetchInterval: (query) => (query.state.data?.sources.some((s) => s.status === "syncing") ? POLL_MS : false),
  });
}

export function useResync(kb: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (source: string) =>
      post<Record<string, unknown>>(
        `/v1/knowledge-bases/${encodeURIComponent(kb)}/sources/${encodeURIComponent(source)}/sync`,
      ),
    onSettled: () => client.invalidateQueries({ queryKey: adminKeys.knowledgeBase(kb) }),
  });
}

const LIVE_RUN = new Set(["pending", "running", "waiting"]);

/** Workflow runs, newest first, a page at a time ("Load more" fetches the next page);
 * the loaded pages refresh while one of their runs is still moving. */
export function useWorkflowRuns(workflow: string, status: string) {
  return useInfiniteQuery({
    queryKey: adminKeys.runs(workflow, status),
    queryFn: ({ pageParam }) => apiJson<RunsPage>(runsPath({ workflow, status }, pageParam)),
    initialPageParam: "",
    getNextPageParam: nextRunsCursor,
    select: (data): WorkflowRun[] => loadedRuns(data.pages),
    refetchInterval: (query) =>
      query.state.data?.pages.some((page) => page.data.some((r) => LIVE_RUN.has(r.status))) ? POLL_MS : false,
  });
}

export function useWorkflowRun(id: string) {
  return useQuery({
    queryKey: adminKeys.run(id),
    queryFn: () => apiJson<WorkflowRunDetail>(`/v1/workflows/runs/${encodeURIComponent(id)}`),
    refetchInterval: (query) => (query.state.data && !LIVE_RUN.has(query.state.data.status) ? false : POLL_MS),
  });
}

/** The audit log's filters as the page holds them (blank: no condition). */
export interface AuditQuery {
  actor: string;
  action: string;
  since: string;
  until: string;
  /** Entries before this seq (the older page), or 0 for the newest. */
  before: number;
}

export const AUDIT_PAGE = 50;

export function useAudit(filter: AuditQuery) {
  return useQuery({
    queryKey: adminKeys.audit(filter),
    queryFn: () => {
      const params = new URLSearchParams({ order: "newest", limit: String(AUDIT_PAGE) });
      if (filter.actor) params.set("actor", filter.actor);
      if (filter.action) params.set("action", filter.action);
      if (filter.since) params.set("since", new Date(filter.since).toISOString());
      if (filter.until) params.set("until", new Date(filter.until).toISOString());
      if (filter.before) params.set("before", String(filter.before));
      return list<AuditEntry>(`/v1/audit?${params}`);
    },
  });
}

export interface HealthView {
  alive: boolean;
  ready: Readiness;
  alerts: Alerts;
  streams: BusStream[];
}

/** The probes, the alerts and the event bus together; refreshed every 10 s. /readyz
 * answers 503 with the same body when something is not ready: that is data, not an error. */
export function useHealth() {
  return useQuery({
    queryKey: adminKeys.health,
    queryFn: async (): Promise<HealthView> => {
      const [alive, ready, alerts, streams] = await Promise.all([
        fetch("/healthz", { credentials: "same-origin" }).then((r) => r.ok, () => false),
        fetch("/readyz", { credentials: "same-origin" }).then((r) => r.json() as Promise<Readiness>),
        apiJson<Alerts>("/v1/admin/alerts"),
        list<BusStream>("/v1/admin/events/streams"),
      ]);
      return { alive, ready, alerts, streams };
    },
    refetchInterval: 10_000,
  });
}
