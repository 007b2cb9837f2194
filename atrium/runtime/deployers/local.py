"""Deployments as local processes: each replica a real OpenAI-compatible server on loopback.

Every replica runs in its own process group, is health-checked (``GET /v1/models``)
before it takes traffic, and is started again (with backoff) when it exits or
stops answering. The deployment is served to the gateway as a :class:`ReplicaSet`
of OpenAI-compatible backends, one per replica, so the catalog routes to it like
any upstream; stopping a replica takes it out of that set first and waits for the
gateway's requests on it to finish.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib.util
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import BaseModel, Field

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.core.settings import OpenAICompatModel
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from atrium.runtime.base import ModelBackend
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers import _process
from atrium.runtime.deployers.base import (
    Deployment,
    DeploymentFailedError,
    ReplicaState,
    ReplicaStatus,
)
from atrium.runtime.deployments import (
    Allocation,
    DeploymentSpec,
    PoolSpec,
    allocate,
    local_pools,
)
from atrium.runtime.routing import Replica, ReplicaSet, RoutingObserver, ScaleFromZero

log = logging.getLogger("atrium.deployers.local")

HOST = "127.0.0.1"
#: Liveness of a ready replica, on a path that does not wait for the model:
#: llama_cpp.server's ``/v1/models`` takes the model's lock, and a request waiting
#: on that lock makes a stream in progress stop early.
_LIVENESS_PATH = {"llamacpp": "/openapi.json", "vllm": "/health"}


class LocalDeployerOptions(BaseModel):
    """How the local deployer starts, watches and stops replicas."""

    log_dir: Path | None = Field(None, description="Replica logs (default: a temporary folder).")
    startup_timeout_seconds: float = Field(120.0, gt=0, description="Load and answer within.")
    health_interval_seconds: float = Field(
        2.0, gt=0, description="Probe a ready replica this often."
    )
    unhealthy_after: int = Field(3, ge=1, description="Failed probes before a restart.")
    probe_timeout_seconds: float = Field(5.0, gt=0, description="A probe slower fails.")
    restart_backoff_seconds: float = Field(0.5, ge=0, description="First wait before a restart.")
    max_restart_backoff_seconds: float = Field(30.0, ge=0, description="Backoff doubles up to.")
    term_grace_seconds: float = Field(10.0, ge=0, description="SIGTERM to SIGKILL.")
    drain_seconds: float = Field(30.0, ge=0, description="Drain timeout when scaling down.")


def replica_command(spec: DeploymentSpec, allocation: Allocation, port: int) -> list[str]:
    """The server one replica runs, listening on ``HOST:port``."""
    path = str(spec.model.path)
    if spec.runtime == "vllm":
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
            "--served-model-name", spec.name, "--host", HOST, "--port", str(port),
            "--max-model-len", str(spec.context_length),
            "--tensor-parallel-size", str(max(1, allocation.gpus)),
        ]  # fmt: skip
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", spec.name,
        "--host", HOST, "--port", str(port), "--n_ctx", str(spec.context_length),
        "--n_threads", str(max(1, int(allocation.cpus))),
    ]  # fmt: skip
    if allocation.kind == "gpu":
        command += ["--n_gpu_layers", "-1"]
    return command


@dataclass(eq=False)
class _Slot:
    """One replica: its process across restarts, and its place in routing."""

    index: int
    port: int
    routed: Replica
    log_path: Path
    state: ReplicaState = ReplicaState.STARTING
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


@dataclass(eq=False)
class _Deployment:
    spec: DeploymentSpec
    allocation: Allocation
    upstream: OpenAICompatModel
    slots: list[_Slot] = field(default_factory=list)
    replica_set: ReplicaSet | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_index: int = 0
    published: bool = False


class LocalDeployer:
    """Runs each replica as a local server process and serves them through the catalog."""

    def __init__(
        self,
        pools: list[PoolSpec] | None = None,
        *,
        catalog: ModelCatalog | None = None,
        options: LocalDeployerOptions | None = None,
        observer: RoutingObserver | None = None,
    ) -> None:
        self._pools = pools if pools is not None else local_pools()
        self._catalog = catalog
        self._options = options or LocalDeployerOptions()
        self._observer = observer
        self._deployments: dict[str, _Deployment] = {}
        self._probe = httpx.AsyncClient(trust_env=False)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = self._options.log_dir

    # -- the Deployer protocol ---------------------------------------------------------

    def allocate(self, spec: DeploymentSpec) -> Allocation:
        """The pool of this machine ``spec`` would use (400 when it cannot hold it)."""
        return allocate(spec, self._pools)

    async def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Place the deployment, start its initial replicas and wait until they answer."""
        self._check_new(spec)
        allocation = self.allocate(spec)
        upstream = OpenAICompatModel(
            base_url=f"http://{HOST}:1/v1",  # each replica's client gets its own URL
            upstream_model=spec.name,
            health_check_seconds=0,  # the deployer probes its replicas itself
            aliases=spec.aliases,
        )
        deployment = _Deployment(spec, allocation, upstream)
        self._deployments[spec.name] = deployment
        try:
            async with deployment.lock:
                # A deployment that may scale to zero still starts one replica: the
                # model is proven to load, and the autoscaler takes it away when idle.
                await self._add_replicas(deployment, max(1, spec.replicas.start))
        except BaseException:
            await self._teardown(deployment, drain_seconds=0)
            raise
        return self._snapshot(deployment)

    async def scale(self, name: str, replicas: int) -> Deployment:
        """Start replicas up to ``replicas`` (ready on return), or drain the extra ones."""
        deployment = self._get(name)
        bounds = deployment.spec.replicas
        if not bounds.min <= replicas <= bounds.max:
            msg = f"{name!r} runs between {bounds.min} and {bounds.max} replicas, not {replicas}"
            raise InvalidRequestError(msg, param="replicas")
        if replicas > deployment.allocation.max_replicas:
            msg = (
                f"pool {deployment.allocation.pool!r} holds at most "
                f"{deployment.allocation.max_replicas} replicas of {name!r}"
            )
            raise InvalidRequestError(msg, param="replicas")
        async with deployment.lock:
            extra = len(deployment.slots) - replicas
            if extra < 0:
                await self._add_replicas(deployment, -extra)
            elif extra > 0:
                victims = sorted(deployment.slots, key=_removal_order)[:extra]
                await self._remove_slots(deployment, victims, self._options.drain_seconds)
        return self._snapshot(deployment)

    async def status(self, name: str) -> Deployment:
        """The deployment and its replicas as they are now."""
        return self._snapshot(self._get(name))

    async def stop(self, name: str, drain_seconds: float = 30.0) -> None:
        """Out of the catalog, every replica drained then stopped, nothing left running."""
        deployment = self._get(name)
        async with deployment.lock:
            await self._teardown(deployment, drain_seconds)

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment."""
        return [self._snapshot(d) for d in self._deployments.values()]

    async def close(self) -> None:
        """Stop every deployment at once (no drain) and release the probe client."""
        await asyncio.gather(
            *(self._teardown(d, drain_seconds=0) for d in list(self._deployments.values()))
        )
        await self._probe.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def backend(self, name: str) -> ReplicaSet | None:
        """The routing backend of a deployment (None until a replica exists)."""
        return self._get(name).replica_set

    # -- checks ------------------------------------------------------------------------

    def _get(self, name: str) -> _Deployment:
        deployment = self._deployments.get(name)
        if deployment is None:
            raise NotFoundError(f"there is no deployment {name!r}", param="name")
        return deployment

    def _check_new(self, spec: DeploymentSpec) -> None:
        if spec.name in self._deployments:
            raise ConflictError(f"the deployment {spec.name!r} exists", param="name")
        taken = set(self._catalog.names()) if self._catalog is not None else set()
        for public in (spec.name, *spec.aliases):
            if public in taken:
                raise ConflictError(f"{public!r} is already a model name", param="name")
        if spec.runtime == "remote":
            msg = "a remote provider runs no local replicas: add it as an openai_compat model"
            raise InvalidRequestError(msg, param="runtime")
        if spec.runtime == "vllm" and importlib.util.find_spec("vllm") is None:
            raise InvalidRequestError("vLLM is not installed on this machine", param="runtime")
        path = spec.model.path
        if path is None or not path.exists():
            raise InvalidRequestError(f"model.path {path} does not exist", param="model.path")

    # -- replicas ----------------------------------------------------------------------

    async def _add_replicas(self, deployment: _Deployment, count: int) -> None:
        slots = [self._new_slot(deployment) for _ in range(count)]
        for slot in slots:
            slot.supervisor = asyncio.create_task(
                self._supervise(deployment, slot), name=f"replica:{slot.routed.name}"
            )
        waits = [asyncio.create_task(s.ready.wait()) for s in slots]
        if not waits:
            self._publish(deployment)
            return
        _, pending = await asyncio.wait(waits, timeout=self._options.startup_timeout_seconds)
        for task in pending:
            task.cancel()
        if pending:
            failed = [s for s in slots if not s.ready.is_set()]
            tail = _process.log_tail(failed[0].log_path)
            await self._remove_slots(deployment, slots, drain_seconds=0)
            msg = f"{len(failed)} replicas of {deployment.spec.name!r} did not become ready"
            raise DeploymentFailedError(f"{msg}; the log ends:\n{tail}")
        self._publish(deployment)

    def _new_slot(self, deployment: _Deployment) -> _Slot:
        index = deployment.next_index
        deployment.next_index += 1
        port = _process.free_port(self._ports())
        name = deployment.spec.name
        replica = Replica(f"{name}@{HOST}:{port}", self._replica_backend(deployment, port))
        replica.healthy = False
        slot = _Slot(index, port, replica, self._logs() / f"{name}-{index}.log")
        deployment.slots.append(slot)
        self._route(deployment, replica)
        return slot

    def _replica_backend(self, deployment: _Deployment, port: int) -> OpenAICompatBackend:
        url = f"http://{HOST}:{port}/v1"
        name = deployment.spec.name
        return OpenAICompatBackend(name, deployment.upstream, base_url=url)

    def _route(self, deployment: _Deployment, replica: Replica) -> None:
        """Put a replica into the deployment's set (made with the first); no traffic yet."""
        if deployment.replica_set is not None:
            deployment.replica_set.replicas.append(replica)
            return
        name = deployment.spec.name
        deployment.replica_set = ReplicaSet(name, [replica], observer=self._observer)

    def _publish(self, deployment: _Deployment) -> None:
        """Serve the deployment through the catalog, once replicas answer."""
        if self._catalog is None or deployment.replica_set is None or deployment.published:
            return
        spec = deployment.spec
        served: ModelBackend = deployment.replica_set
        if spec.replicas.min == 0:
            served = ScaleFromZero(deployment.replica_set, lambda: self._wake(spec.name))
        self._catalog.add_model(spec.name, served, tuple(spec.aliases))
        deployment.published = True

    async def _wake(self, name: str) -> None:
        """Start one replica of a deployment scaled to zero (a request is waiting)."""
        deployment = self._get(name)
        if not any(s.state != ReplicaState.DRAINING for s in deployment.slots):
            log.info("deployment %s scaled to zero: starting a replica for a request", name)
            await self.scale(name, 1)

    def _ports(self) -> set[int]:
        return {s.port for d in self._deployments.values() for s in d.slots}

    def _logs(self) -> Path:
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="atrium-replicas-")
            self._log_dir = Path(self._tmp.name)
        return self._log_dir

    # -- supervision -------------------------------------------------------------------

    async def _supervise(self, deployment: _Deployment, slot: _Slot) -> None:
        """Run the replica until it is stopped, starting it again whenever it exits."""
        delay = self._options.restart_backoff_seconds
        while not slot.stopping.is_set():
            was_ready = await self._run_once(deployment, slot)
            if slot.stopping.is_set():
                return
            slot.restarts += 1
            slot.state = ReplicaState.RESTARTING
            if was_ready:
                delay = self._options.restart_backoff_seconds
            else:
                await self._move(deployment, slot)  # the port may be taken: try another
            log.warning(
                "replica %s exited (%s); restart %d in %.1fs",
                slot.routed.name, slot.last_exit_code, slot.restarts, delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.stopping.wait(), delay)
            delay = min(delay * 2 or 0.1, self._options.max_restart_backoff_seconds)

    async def _run_once(self, deployment: _Deployment, slot: _Slot) -> bool:
        """One life of the process; whether it became ready."""
        command = replica_command(deployment.spec, deployment.allocation, slot.port)
        process = await _process.launch(command, slot.log_path)
        slot.process = process
        if slot.stopping.is_set():  # stop() came while the process was starting
            slot.last_exit_code = await _process.terminate(process, 0)
            return False
        slot.state = ReplicaState.STARTING
        ready = await self._wait_ready(slot, process)
        if ready:
            if slot.state != ReplicaState.DRAINING:
                slot.state = ReplicaState.READY
                slot.routed.healthy = True
            slot.ready.set()
            await self._watch(deployment, slot, process)
        slot.routed.healthy = False
        slot.last_exit_code = await _process.terminate(process, self._options.term_grace_seconds)
        return ready

    async def _wait_ready(self, slot: _Slot, process: asyncio.subprocess.Process) -> bool:
        deadline = asyncio.get_running_loop().time() + self._options.startup_timeout_seconds
        while asyncio.get_running_loop().time() < deadline:
            if slot.stopping.is_set():
                return False
            ready = slot.url("/v1/models")  # the model is loaded and named
            if await _process.answers(self._probe, ready, self._options.probe_timeout_seconds):
                return True
            if await _process.exited_within(process, 0.2):
                return False
        log.warning("replica %s did not answer in time", slot.routed.name)
        return False

    async def _watch(
        self, deployment: _Deployment, slot: _Slot, process: asyncio.subprocess.Process
    ) -> None:
        """Until the process exits, or fails ``unhealthy_after`` probes in a row."""
        failures = 0
        options = self._options
        while not await _process.exited_within(process, options.health_interval_seconds):
            if slot.stopping.is_set():
                return
            url = slot.url(_LIVENESS_PATH.get(deployment.spec.runtime, "/v1/models"))
            live = await _process.answers(self._probe, url, options.probe_timeout_seconds)
            failures = 0 if live else failures + 1
            if failures >= self._options.unhealthy_after:
                log.warning("replica %s stopped answering; restarting it", slot.routed.name)
                slot.state = ReplicaState.UNHEALTHY
                return

    async def _move(self, deployment: _Deployment, slot: _Slot) -> None:
        """Give a replica that never came up a fresh port (its old client is closed)."""
        old = slot.routed.backend
        slot.port = _process.free_port(self._ports())
        slot.routed.name = f"{deployment.spec.name}@{HOST}:{slot.port}"
        slot.routed.backend = self._replica_backend(deployment, slot.port)
        await old.close()

    # -- stopping ----------------------------------------------------------------------

    async def _remove_slots(
        self, deployment: _Deployment, slots: builtins.list[_Slot], drain_seconds: float
    ) -> None:
        await asyncio.gather(*(self._drain(deployment, s, drain_seconds) for s in slots))
        await asyncio.gather(*(self._stop_slot(s) for s in slots))
        for slot in slots:
            deployment.slots.remove(slot)

    async def _drain(self, deployment: _Deployment, slot: _Slot, seconds: float) -> None:
        """Out of routing, then wait for the gateway's requests on it to finish."""
        slot.state = ReplicaState.DRAINING
        if deployment.replica_set is not None and slot.routed in deployment.replica_set.replicas:
            deployment.replica_set.replicas.remove(slot.routed)
        deadline = asyncio.get_running_loop().time() + seconds
        # The gateway's count is a plain counter on the routing entry: polled, not awaited.
        while slot.routed.in_flight > 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if slot.routed.in_flight:
            left = slot.routed.in_flight
            log.warning("replica %s stops with %d requests in flight", slot.routed.name, left)

    async def _stop_slot(self, slot: _Slot) -> None:
        slot.stopping.set()
        if slot.process is not None:
            await _process.terminate(slot.process, self._options.term_grace_seconds)
        if slot.supervisor is not None:
            await slot.supervisor
        if slot.process is not None:  # the supervisor may have started one meanwhile
            await _process.terminate(slot.process, 0)
        slot.state = ReplicaState.STOPPED
        await slot.routed.backend.close()

    async def _teardown(self, deployment: _Deployment, drain_seconds: float) -> None:
        name = deployment.spec.name
        if self._catalog is not None and deployment.published:
            self._catalog.remove_model(name)
            deployment.published = False
        await self._remove_slots(deployment, list(deployment.slots), drain_seconds)
        self._deployments.pop(name, None)

    # -- status ------------------------------------------------------------------------

    def _snapshot(self, deployment: _Deployment) -> Deployment:
        return Deployment(
            name=deployment.spec.name,
            spec=deployment.spec,
            allocation=deployment.allocation,
            desired=sum(1 for s in deployment.slots if s.state != ReplicaState.DRAINING),
            replicas=[_status(s) for s in deployment.slots],
        )


def _status(slot: _Slot) -> ReplicaStatus:
    process = slot.process
    alive = process is not None and process.returncode is None
    return ReplicaStatus(
        index=slot.index,
        state=slot.state,
        base_url=slot.base_url,
        pid=process.pid if alive and process is not None else None,
        restarts=slot.restarts,
        last_exit_code=slot.last_exit_code,
        in_flight=slot.routed.in_flight,
    )


def _removal_order(slot: _Slot) -> tuple[bool, int]:
    """Replicas that are not ready go first, then the newest."""
    return (slot.state == ReplicaState.READY, -slot.index)
