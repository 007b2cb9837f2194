"""The composition root: ``build_app(settings)`` wires one :class:`Platform`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from secrets import token_hex

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import create_async_engine

from atrium import __version__
from atrium.api.alerts import alerts_router
from atrium.api.attachments import ATTACHMENTS_UPLOAD, attachments_router
from atrium.api.audit import audit_router
from atrium.api.errors import install_error_handlers
from atrium.api.events import events_router
from atrium.api.health import health_router
from atrium.api.keys import keys_router, teams_router
from atrium.api.knowledge import UPLOAD_PATH, caller_of, knowledge_router
from atrium.api.registry import registry_router
from atrium.api.releases import (
    deployments_router,
    experiments_router,
    feedback_router,
    releases_router,
)
from atrium.api.routes import routes_router
from atrium.api.secrets import secrets_router
from atrium.api.ui import install_web
from atrium.api.usage import usage_router
from atrium.api.workflows import MAX_RUN_FILES, RUNS_PATH, hooks_router, workflows_router
from atrium.audit import AuditMiddleware, AuditRecorder, AuditRepository
from atrium.bus import EventPublisher, ManagedBus
from atrium.bus.base import cancel_and_wait
from atrium.bus.factory import build_bus
from atrium.core.errors import InvalidRequestError
from atrium.core.http import parse_data
from atrium.core.netguard import NetworkPolicy
from atrium.core.settings import Settings
from atrium.core.spans import SpanFactory, no_span
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.budgets import (
    InProcessSpendLedger,
    RedisSpendLedger,
    SpendLedger,
    stored_budgets,
)
from atrium.gateway.cache import ResponseCache, build_response_cache
from atrium.gateway.guardrails import Guardrails
from atrium.gateway.limits import InProcessRateLimiter, Limits, RateLimiter
from atrium.gateway.middleware import EdgeMiddleware
from atrium.gateway.redis_limits import RedisRateLimiter
from atrium.gateway.route_admin import RouteAdmin
from atrium.gateway.routes import InferenceEndpoints, inference_router, models_router
from atrium.gateway.semantic_cache import SemanticCache, build_prompt_index
from atrium.gateway.service import InferenceService
from atrium.gateway.usage import UsageRecorder
from atrium.observability.alerts import AlertService, build_alert_service
from atrium.observability.metrics import (
    BudgetMetrics,
    BusMetrics,
    GatewayMetrics,
    RagMetrics,
    ReleaseMetrics,
    WorkflowMetrics,
)
from atrium.observability.notifications import SmtpServer
from atrium.observability.tracing import TracedGatewayMetrics, Tracing, TracingMiddleware
from atrium.rag.chat import PREFIX as RAG_PREFIX
from atrium.rag.chat import RagChatCompletions
from atrium.rag.embedding import CatalogEmbedder, TokenCounter
from atrium.rag.feedback import FeedbackModel
from atrium.rag.index import ChunkIndex, LanceChunkIndex, PgVectorChunkIndex
from atrium.rag.requests import Caller
from atrium.rag.service import KnowledgeService, RagConfig
from atrium.registry import ModelStore, RegistryService, SourcePolicy
from atrium.releases.deployments import ServiceRoutes
from atrium.releases.hub import hub_webhook_router
from atrium.releases.system import ReleaseSystem, build_releases, watched_roots
from atrium.runtime.backends import default_factories
from atrium.runtime.catalog import BackendFactory, ModelCatalog
from atrium.runtime.deployers.base import Deployer
from atrium.runtime.deployers.local import LocalDeployer, LocalDeployerOptions
from atrium.store import Database
from atrium.store.hot import HotState, InProcessHotState, RedisHotState
from atrium.store.hot_workflows import HotWorkflowRepository
from atrium.store.keys import ApiKeyRepository, Scope
from atrium.store.knowledge import KnowledgeRepository
from atrium.store.registry import RegistryRepository
from atrium.store.routes import RouteRepository
from atrium.store.secrets import SecretStore, load_or_create_key
from atrium.store.teams import TeamRepository
from atrium.store.usage import UsageRepository
from atrium.users.web import WebServices, build_web
from atrium.workflows.adapters import (
    FsspecArtifacts,
    GatewayModels,
    KnowledgeRetriever,
    ParsedDocuments,
    StoredSecrets,
)
from atrium.workflows.blocks.base import BlockRegistry, BlockServices
from atrium.workflows.blocks.library import default_blocks
from atrium.workflows.engine import EngineConfig, WorkflowEngine
from atrium.workflows.recorder import RunRecorder
from atrium.workflows.service import WorkflowService
from atrium.workflows.triggers import TriggerService
from atrium.workflows.workers import WorkerMonitor

log = logging.getLogger("atrium")
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

KeyAnnouncer = Callable[[str], None]


def _announce_to_stderr(secret: str) -> None:
    sys.stderr.write(
        "\nCreated the first admin API key. It is shown only this once; keep it safe:\n\n"
        f"    {secret}\n\n"
        "Use it as the OpenAI API key (export ATRIUM_API_KEY=... for `atrium chat`).\n\n"
    )


@dataclass
class Platform:
    """Every service of one Atrium process, built from settings."""

    settings: Settings
    db: Database
    keys: ApiKeyRepository
    teams: TeamRepository
    bus: ManagedBus
    publisher: EventPublisher
    catalog: ModelCatalog
    auth: KeyAuthenticator
    metrics: GatewayMetrics
    inference: InferenceService
    usage: UsageRepository
    usage_recorder: UsageRecorder
    routes: RouteRepository
    route_admin: RouteAdmin
    secrets: SecretStore
    index: ChunkIndex
    knowledge: KnowledgeService
    workflows: WorkflowService
    triggers: TriggerService
    deployer: Deployer
    registry: RegistryService
    web: WebServices
    releases: ReleaseSystem
    audit: AuditRepository
    audit_recorder: AuditRecorder
    worker_monitor: WorkerMonitor | None = None
    redis: aioredis.Redis | None = None
    cache: ResponseCache | None = None
    announce_key: KeyAnnouncer = _announce_to_stderr
    tracing: Tracing | None = None
    alerts: AlertService | None = None
    bus_metrics: BusMetrics | None = None
    _scheduler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Migrate the store, make sure an admin key exists, start the bus and models."""
        await self.db.migrate()
        await self._bootstrap_key()
        # The spend gauge of every budget from the start, not from its first request here.
        await self.inference.observe_budgets(await stored_budgets(self.keys, self.teams))
        await self.web.start()
        await self.bus.start()
        await self.audit_recorder.start()
        await self.usage_recorder.start()
        await self.releases.restore()  # deployments first: stored routes point at them
        await self.route_admin.start()
        await self.auth.start()
        await self.publisher.start()
        await self.catalog.start()
        self._scheduler = asyncio.create_task(self.knowledge.run_scheduler())
        if self.settings.workflows.enabled:
            # The release pipeline binds before DBOS launches: it recovers unfinished releases.
            await self.workflows.engine.start(also_bind=[self.releases.bind])
            await self.triggers.start()
            if self.worker_monitor is not None:
                await self.worker_monitor.start()
        await self.releases.start()
        if self.alerts is not None:
            await self.alerts.start()
        log.info("atrium %s ready: %s", __version__, ", ".join(self.catalog.names()))

    async def close(self) -> None:
        """Stop in reverse order; each step runs even if an earlier one failed."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.db.close)
            if self.tracing is not None:
                stack.callback(self.tracing.shutdown)
            if self.redis is not None:
                stack.push_async_callback(self.redis.aclose)
            stack.push_async_callback(self.bus.close)
            stack.push_async_callback(self.audit_recorder.close)
            stack.push_async_callback(self.usage_recorder.close)
            stack.push_async_callback(self.route_admin.close)
            stack.push_async_callback(self.auth.close)
            stack.push_async_callback(self.publisher.close)
            stack.push_async_callback(self.inference.drain)
            if self.cache is not None:
                stack.push_async_callback(self.cache.close)
            stack.push_async_callback(self.catalog.close)
            stack.push_async_callback(self.deployer.close)  # drains replicas before the catalog
            stack.push_async_callback(self.index.close)
            if self._scheduler is not None:
                stack.push_async_callback(cancel_and_wait, self._scheduler)
            if self.settings.workflows.enabled:
                stack.push_async_callback(self.workflows.engine.close)
                stack.push_async_callback(self.triggers.close)
                if self.worker_monitor is not None:
                    stack.push_async_callback(self.worker_monitor.close)
            stack.push_async_callback(self.releases.close)
            if self.alerts is not None:
                stack.push_async_callback(self.alerts.close)

    async def _bootstrap_key(self) -> None:
        configured = self.settings.auth.bootstrap_key
        if configured is not None:
            secret = configured.get_secret_value()
            if await self.keys.find_by_secret(secret) is None:
                try:
                    await self.keys.create(
                        name="bootstrap admin", scopes={Scope.ADMIN, Scope.INFERENCE}, secret=secret
                    )
                except InvalidRequestError:
                    # Another replica starting at the same moment stored it first.
                    if await self.keys.find_by_secret(secret) is None:
                        raise
            return
        if await self.keys.count() == 0:
            new = await self.keys.create(
                name="bootstrap admin", scopes={Scope.ADMIN, Scope.INFERENCE}
            )
            self.announce_key(new.secret)


def build_platform(
    settings: Settings,
    *,
    factories: Mapping[str, BackendFactory] | None = None,
    announce_key: KeyAnnouncer = _announce_to_stderr,
) -> Platform:
    """Build (but do not start) every service from settings."""
    db = Database(settings.store_url, pool_size=settings.store.pool_size, echo=settings.store.echo)
    keys = ApiKeyRepository(db, prefix=settings.auth.key_prefix)
    redis_client: aioredis.Redis | None = None
    backends = (settings.bus.backend, settings.limits.backend, settings.cache.backend,
                settings.hot.backend)  # fmt: skip
    if "redis" in backends:
        redis_client = aioredis.Redis.from_url(settings.redis.url)
    bus = build_bus(settings.bus, redis_client)
    publisher = EventPublisher(bus, max_queue_size=settings.bus.publish_queue)
    usage = UsageRepository(db)
    audit = AuditRepository(db)
    routes = RouteRepository(db)
    cache = build_response_cache(settings.cache, redis_client)
    secrets = SecretStore(db, _secret_key(settings))
    tracing = Tracing(settings.tracing) if settings.tracing.enabled else None
    metrics = TracedGatewayMetrics() if tracing is not None else GatewayMetrics()
    catalog = ModelCatalog.from_settings(
        settings.models,
        factories
        or default_factories(
            observer=metrics,
            secrets=secrets,
            credential_refresh_s=settings.credential_refresh_seconds,
        ),
        settings.routes,
        observer=metrics,
    )
    auth = KeyAuthenticator(
        keys, ttl=settings.auth.cache_ttl_seconds, bus=bus, publish=publisher.publish_urgent
    )
    audit_recorder = _audit_recorder(settings, audit, bus)
    inference = InferenceService(
        catalog=catalog,
        auth=auth,
        limiter=_limiter(settings, redis_client),
        metrics=metrics,
        publisher=publisher,
        default_limits=Limits(
            rpm=settings.limits.default_rpm,
            tpm=settings.limits.default_tpm,
            parallel=settings.limits.default_max_parallel,
        ),
        prices=settings.prices,
        guardrails=Guardrails(settings.guardrails),
        cache=cache,
        cache_settings=settings.cache,
        ledger=_ledger(settings, redis_client, usage, BudgetMetrics(metrics.registry)),
        model_limits={
            name: Limits(rpm=m.rpm, tpm=m.tpm, parallel=m.max_parallel)
            for name, m in settings.limits.models.items()
        },
        transcripts=audit_recorder if audit_recorder.max_text_chars else None,
        semantic_cache=_semantic_cache(settings, catalog, cache, redis_client),
    )
    index = _index(settings)
    knowledge_repo = KnowledgeRepository(db)
    span: SpanFactory = tracing.span if tracing is not None else no_span
    knowledge = KnowledgeService(
        repo=knowledge_repo,
        index=index,
        catalog=catalog,
        chat=inference,
        secrets=secrets,
        feedback=FeedbackModel(knowledge_repo, threshold=settings.rag.feedback_threshold),
        count_tokens=TokenCounter(),
        config=_rag_config(settings),
        publish=publisher.publish_nowait,
        span=span,
        metrics=RagMetrics(metrics.registry),
    )
    inference.delegate(RAG_PREFIX, RagChatCompletions(knowledge, inference, _rag_caller(auth)))
    hot = _hot_state(settings, redis_client)
    workflows = _workflows(
        settings,
        publisher=publisher,
        db=db,
        inference=inference,
        auth=auth,
        knowledge=knowledge,
        secret_store=secrets,
        hot=hot,
        span=span,
        metrics=WorkflowMetrics(metrics.registry),
    )
    registry = _registry(settings, db)
    deployer, service_routes = _deployer(settings, catalog, metrics)
    route_admin = RouteAdmin(catalog, routes, bus)
    releases = build_releases(
        settings.releases,
        workflows_enabled=settings.workflows.enabled,
        db=db,
        bus=bus,
        publisher=publisher,
        registry=registry,
        deployer=deployer,
        catalog=catalog,
        routes=route_admin,
        metrics=ReleaseMetrics(metrics.registry),
        cache_dir=settings.data_dir.resolve() / "model-cache",
        watch=settings.workflows.worker,
        service_routes=service_routes,
    )
    worker_monitor = _worker_monitor(settings, workflows)
    bus_metrics = BusMetrics(metrics.registry)  # refreshed by /metrics and the alert loop
    return Platform(
        audit=audit,
        audit_recorder=audit_recorder,
        registry=registry,
        deployer=deployer,
        releases=releases,
        workflows=workflows,
        triggers=TriggerService(workflows.repo, workflows.engine, secrets, bus),
        worker_monitor=worker_monitor,
        settings=settings,
        secrets=secrets,
        index=index,
        knowledge=knowledge,
        db=db,
        keys=keys,
        teams=TeamRepository(db),
        usage=usage,
        usage_recorder=UsageRecorder(bus, usage),
        routes=routes,
        route_admin=route_admin,
        bus=bus,
        publisher=publisher,
        catalog=catalog,
        auth=auth,
        metrics=metrics,
        inference=inference,
        redis=redis_client,
        cache=cache,
        announce_key=announce_key,
        tracing=tracing,
        bus_metrics=bus_metrics,
        alerts=build_alert_service(
            settings.alerts,
            metrics.registry,
            bus=bus,
            policy=_network_policy(
                settings.alerts.allow_private_networks, settings.alerts.allowed_hosts
            ),
            smtp=_alert_smtp(settings),
            reveal=secrets.get,
            workers=worker_monitor.live if worker_monitor is not None else None,
            publish=publisher.publish_nowait,
            bus_metrics=bus_metrics,
            redis=redis_client,  # replicas: each alert transition notified once per fleet
        ),
        web=build_web(
            settings.web,
            db=db,
            keys=keys,
            auth=auth,
            secret_key=_secret_key(settings),
            redis=redis_client,
            hot=hot,
            hot_ttl_seconds=settings.hot.ttl_seconds,
            publish=publisher.publish_urgent,
        ),
    )


def _bus_metrics_refresh(platform: Platform) -> Callable[[], Awaitable[None]] | None:
    """What a scrape of /metrics runs first: the bus gauges read fresh from the bus."""
    bus_metrics = platform.bus_metrics
    if bus_metrics is None:
        return None

    async def refresh() -> None:
        await bus_metrics.refresh(platform.bus)

    return refresh


def _audit_recorder(settings: Settings, audit: AuditRepository, bus: ManagedBus) -> AuditRecorder:
    record = settings.audit
    return AuditRecorder(
        audit,
        bus=bus if record.record_inference else None,
        flush_seconds=record.flush_seconds,
        max_queue=record.queue,
        max_text_chars=record.max_text_chars
        if record.record_inference and record.record_text
        else 0,
    )


def _rag_caller(auth: KeyAuthenticator) -> Callable[[str | None], Awaitable[Caller]]:
    async def authenticate(authorization: str | None) -> Caller:
        principal = await auth.authenticate(authorization)
        principal.require(Scope.INFERENCE)
        return caller_of(principal, authorization)

    return authenticate


def _secret_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return load_or_create_key(settings.data_dir / "secret.key")


def _index(settings: Settings) -> ChunkIndex:
    rag = settings.rag
    if rag.index == "pgvector":
        if not rag.pgvector_url:
            msg = "rag.pgvector_url is required when rag.index is 'pgvector'"
            raise InvalidRequestError(msg, param="rag.pgvector_url")
        engine = create_async_engine(rag.pgvector_url, pool_pre_ping=True)
        return PgVectorChunkIndex(engine, owns_engine=True)
    return LanceChunkIndex(settings.data_dir / "index", ann_threshold=rag.ann_threshold)


def _rag_config(settings: Settings) -> RagConfig:
    rag, data_dir = settings.rag, settings.data_dir.resolve()
    policy = _network_policy(rag.allow_private_networks, rag.allowed_hosts)
    protected = (data_dir / "atrium.db", data_dir / "secret.key", data_dir / "index")
    return RagConfig(
        data_dir=data_dir,
        max_document_bytes=rag.max_upload_bytes,
        folder_roots=tuple(root.resolve() for root in rag.folder_roots),
        protected_paths=protected,
        policy=policy,
    )


def _network_policy(allow_private: bool, allowed: list[str]) -> NetworkPolicy:
    hosts, networks = [], []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.append(entry)
    return NetworkPolicy(
        allow_private=allow_private, allowed_hosts=tuple(hosts), allowed_networks=tuple(networks)
    )


def _engine_config(settings: Settings) -> EngineConfig:
    wf = settings.workflows
    url = wf.system_database_url
    if url is None and settings.store.url and settings.store.url.startswith("postgresql"):
        url = "postgresql://" + settings.store.url.split("://", 1)[1]
    if url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{settings.data_dir.resolve() / 'workflows.sqlite'}"
    executor = wf.executor_id
    if executor is None:
        executor = (
            "local"
            if url.startswith("sqlite")
            else f"{socket.gethostname()}-{os.getpid()}-{token_hex(3)}"
        )
    return EngineConfig(
        system_database_url=url,
        executor_id=executor,
        queue_concurrency=wf.queue_concurrency,
        listen_queue=wf.worker,
    )


def _workflows(
    settings: Settings,
    *,
    publisher: EventPublisher,
    db: Database,
    inference: InferenceService,
    auth: KeyAuthenticator,
    knowledge: KnowledgeService,
    secret_store: SecretStore,
    hot: HotState,
    span: SpanFactory,
    metrics: WorkflowMetrics | None = None,
) -> WorkflowService:
    wf = settings.workflows
    repo = HotWorkflowRepository(db, hot, ttl_seconds=settings.hot.ttl_seconds)
    artifacts = FsspecArtifacts(wf.artifacts_url or str(settings.data_dir.resolve() / "artifacts"))
    services = BlockServices(
        models=GatewayModels(inference, auth, settings.prices),
        knowledge=KnowledgeRetriever(knowledge, auth),
        secrets=StoredSecrets(secret_store),
        artifacts=artifacts,
        documents=ParsedDocuments(settings.rag.max_upload_bytes),
        network_policy=_network_policy(wf.allow_private_networks, wf.allowed_hosts),
        smtp=wf.smtp.model_dump(),
    )
    engine = WorkflowEngine(
        config=_engine_config(settings),
        registry=BlockRegistry(default_blocks()),
        services=services,
        store=repo,
        recorder=RunRecorder(repo),
        publish=publisher.publish_nowait,
        span=span,
        metrics=metrics,
    )
    return WorkflowService(
        repo,
        engine,
        artifacts,
        sync_timeout=wf.sync_timeout_seconds,
        max_inputs_bytes=wf.max_inputs_bytes,
        max_file_bytes=settings.rag.max_upload_bytes,
    )


def _deployer(
    settings: Settings, catalog: ModelCatalog, metrics: GatewayMetrics
) -> tuple[Deployer, ServiceRoutes | None]:
    """Local replica processes, or a Kubernetes cluster reached through its Services."""
    if settings.deployer.kind == "kubernetes":
        # Imported only when chosen: the client library adds most of a second to startup.
        from atrium.runtime.deployers.kubernetes import KubernetesDeployer, KubernetesOptions

        options = parse_data(KubernetesOptions, settings.deployer.kubernetes)
        cluster = KubernetesDeployer(options)
        return cluster, ServiceRoutes(catalog, cluster.service_url)
    local = LocalDeployer(
        catalog=catalog,
        options=LocalDeployerOptions(log_dir=settings.data_dir.resolve() / "replicas"),
        observer=metrics,
    )
    return local, None


def _registry(settings: Settings, db: Database) -> RegistryService:
    reg, data_dir = settings.registry, settings.data_dir.resolve()
    store = ModelStore(
        reg.store_url or str(data_dir / "registry"),
        max_artifact_bytes=reg.max_artifact_bytes,
        options=reg.store_options,
    )
    policy = SourcePolicy(
        data_dir=data_dir,
        allowed_roots=tuple(
            root.resolve() for root in (*reg.source_roots, *watched_roots(settings.releases))
        ),
        protected_paths=(data_dir / "atrium.db", data_dir / "secret.key", data_dir / "index"),
    )
    return RegistryService(RegistryRepository(db), store, sources=policy)


def _worker_monitor(settings: Settings, workflows: WorkflowService) -> WorkerMonitor | None:
    """Workers on a shared PostgreSQL take over each other's runs; SQLite has one process."""
    config = workflows.engine.config
    if config.system_database_url.startswith("sqlite"):
        return None
    return WorkerMonitor(
        workflows.repo,
        workflows.engine,
        executor_id=config.executor_id,
        role="worker" if settings.workflows.worker else "api",
        heartbeat_seconds=settings.workflows.heartbeat_seconds,
        takeover_after_seconds=settings.workflows.takeover_after_seconds,
    )


def _limiter(settings: Settings, redis_client: aioredis.Redis | None) -> RateLimiter:
    if redis_client is not None and settings.limits.backend == "redis":
        return RedisRateLimiter(
            redis_client,
            prefix=settings.limits.redis_prefix,
            on_failure=settings.limits.on_redis_failure,
        )
    return InProcessRateLimiter()


def _semantic_cache(
    settings: Settings,
    catalog: ModelCatalog,
    cache: ResponseCache | None,
    redis: aioredis.Redis | None,
) -> SemanticCache | None:
    """The semantic cache over the exact one, when both are on."""
    semantic = settings.cache.semantic
    if cache is None or not semantic.enabled:
        return None
    index = build_prompt_index(
        semantic,
        settings.cache.backend,
        redis,
        timeout_s=settings.cache.redis_timeout_seconds,
        cooldown_s=settings.cache.redis_cooldown_seconds,
    )
    return SemanticCache(CatalogEmbedder(catalog, semantic.embedder), index, cache, semantic)


def _ledger(
    settings: Settings,
    redis_client: aioredis.Redis | None,
    usage: UsageRepository,
    budget_metrics: BudgetMetrics,
) -> SpendLedger:
    if redis_client is not None and settings.limits.backend == "redis":
        return RedisSpendLedger(redis_client, usage.spend_since, on_spend=budget_metrics.spent)
    return InProcessSpendLedger(usage.spend_since, on_spend=budget_metrics.spent)


def _hot_state(settings: Settings, redis_client: aioredis.Redis | None) -> HotState:
    """Hot state in Redis when configured (shared by replicas), else in this process."""
    if redis_client is not None and settings.hot.backend == "redis":
        return RedisHotState(redis_client, prefix=settings.hot.redis_prefix)
    return InProcessHotState(max_entries=settings.hot.max_entries)


def _alert_smtp(settings: Settings) -> SmtpServer | None:
    """Alert e-mail goes through the platform's SMTP server (``workflows.smtp``)."""
    smtp = settings.workflows.smtp
    if smtp.host is None:
        return None
    return SmtpServer(
        host=smtp.host,
        port=smtp.port,
        sender=smtp.from_address or f"atrium@{smtp.host}",
        username=smtp.username,
        password_secret=smtp.password_secret,
        starttls=smtp.starttls,
    )


def build_app(settings: Settings, platform: Platform | None = None) -> FastAPI:
    """The ASGI application: routers, error handlers and hot-path middleware."""
    platform = platform or build_platform(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await platform.start()
            yield
        finally:
            await platform.close()

    # FastAPI's own OpenTelemetry layer stays off: Atrium traces with its own provider
    # (TracingMiddleware, never installed globally), and FastAPI would otherwise look
    # up the global providers on every request, about 3% of the gateway's CPU.
    app = FastAPI(title="Atrium", version=__version__, lifespan=lifespan, telemetry=_NO_TELEMETRY)
    app.state.platform = platform
    install_error_handlers(app)
    app.include_router(inference_router(platform.inference))
    app.include_router(models_router(platform.catalog, platform.auth))
    app.include_router(
        keys_router(platform.keys, platform.teams, platform.auth, platform.publisher.publish_urgent)
    )
    app.include_router(teams_router(platform.teams, platform.auth))
    app.include_router(usage_router(platform.usage, platform.auth))
    app.include_router(routes_router(platform.route_admin, platform.routes, platform.auth))
    app.include_router(knowledge_router(platform.knowledge, platform.auth))
    app.include_router(secrets_router(platform.secrets, platform.auth))
    app.include_router(workflows_router(platform.workflows, platform.triggers, platform.auth))
    app.include_router(hooks_router(platform.triggers))
    app.include_router(registry_router(platform.registry, platform.auth))
    app.include_router(deployments_router(platform.releases.deployments, platform.auth))
    app.include_router(releases_router(platform.releases.releases, platform.auth))
    app.include_router(experiments_router(platform.releases.experiments, platform.auth))
    app.include_router(
        feedback_router(platform.releases.experiments, platform.catalog, platform.auth)
    )
    app.include_router(attachments_router(platform.auth, max_bytes=settings.rag.max_upload_bytes))
    if platform.releases.webhook is not None and platform.releases.webhook_path is not None:
        path = platform.releases.webhook_path  # public: the Hub signs with a shared secret
        app.include_router(hub_webhook_router(platform.releases.webhook, path=path))
    app.include_router(
        health_router(
            platform.db,
            platform.catalog,
            platform.metrics,
            platform.auth,
            public_metrics=settings.server.public_metrics,
            refresh=_bus_metrics_refresh(platform),
        )
    )
    app.include_router(events_router(platform.bus, platform.auth))
    app.include_router(audit_router(platform.audit, platform.auth))
    app.include_router(alerts_router(platform.alerts, platform.auth))
    if settings.audit.record_api_calls:  # inside the session cookie's: it sees a browser's key
        app.add_middleware(
            AuditMiddleware, record=platform.audit_recorder.record_nowait, auth=platform.auth
        )
    # Inference POSTs skip the framework's layers, and the audit one that never records
    # them (their entries come from request.completed events).
    app.add_middleware(InferenceEndpoints, service=platform.inference)
    install_web(app, platform.web, platform.auth)  # the UI answers paths no route matched
    # Request id, unhandled errors and the body size limit: one layer around all the rest.
    # Multipart framing around an upload takes a few bytes more than the file itself.
    upload_limit = settings.rag.max_upload_bytes + 64 * 1024
    app.add_middleware(
        EdgeMiddleware,
        max_bytes=settings.server.max_body_bytes,
        overrides=[
            (UPLOAD_PATH, max(upload_limit, settings.server.max_body_bytes)),
            (RUNS_PATH, max(upload_limit * MAX_RUN_FILES, settings.server.max_body_bytes)),
            (ATTACHMENTS_UPLOAD, max(upload_limit, settings.server.max_body_bytes)),
        ],
        trace_ids=platform.tracing is None,  # with tracing on, the server span names the trace
    )
    if platform.tracing is not None:  # outermost: the span covers everything, errors included
        app.add_middleware(TracingMiddleware, tracing=platform.tracing)
    return app
