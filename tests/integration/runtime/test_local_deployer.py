"""The local deployer with real replica processes (llama-cpp-python's server, bundled GGUF)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from atrium.app import build_app, build_platform
from atrium.core.errors import ConflictError, InvalidRequestError
from atrium.core.settings import Settings
from atrium.runtime.backends.llamacpp import bundled_gguf
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers import (
    Deployment,
    DeploymentFailedError,
    LocalDeployer,
    LocalDeployerOptions,
    ReplicaState,
)
from atrium.runtime.deployments import DeploymentSpec, PoolSpec
from atrium.runtime.schema import ChatCompletionRequest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "atr-" + "d" * 40
POOL = [PoolSpec(name="test-cpu", kind="cpu", cpus=2, memory_gib=8)]
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Name three colours."}]


def spec(name: str = "smol", replicas: int = 2, path: Path | None = None) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": name,
            "model": {"name": "smollm2-135m", "version": "q4_1", "path": path or bundled_gguf()},
            "runtime": "llamacpp",
            "replicas": {"min": 1, "max": 2, "initial": replicas},
            "resources": {"cpus": 1},
            "context_length": 512,
        }
    )


def options(tmp_path: Path, **fields: float) -> LocalDeployerOptions:
    return LocalDeployerOptions.model_validate(
        {
            "log_dir": tmp_path / "logs",
            "startup_timeout_seconds": 60,
            "health_interval_seconds": 0.5,
            "restart_backoff_seconds": 0.2,
            "term_grace_seconds": 5,
            **fields,
        }
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(deployment: Deployment) -> list[int]:
    return [r.pid for r in deployment.replicas if r.pid is not None]


async def until(check: object, seconds: float = 60.0) -> None:
    """Poll an async predicate until it holds."""
    assert callable(check)
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def catalog() -> ModelCatalog:
    return ModelCatalog([])


@pytest_asyncio.fixture
async def deployer(catalog: ModelCatalog, tmp_path: Path) -> AsyncIterator[LocalDeployer]:
    deployer = LocalDeployer(POOL, catalog=catalog, options=options(tmp_path))
    try:
        yield deployer
    finally:
        await deployer.close()


async def ask(base_url: str, model: str) -> str:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=4,
            temperature=0,
        )
    return reply.choices[0].message.content or ""


async def test_two_replicas_serve_the_openai_api(deployer: LocalDeployer) -> None:
    deployment = await deployer.deploy(spec())
    assert deployment.ready == 2
    assert deployment.allocation.pool == "test-cpu"
    assert len(set(deployment.base_urls)) == 2
    for url in deployment.base_urls:
        assert url.startswith("http://127.0.0.1:")
        assert await ask(url, "smol")
    running = pids(deployment)
    assert len(running) == 2
    assert [d.name for d in await deployer.list()] == ["smol"]
    await deployer.close()
    assert not any(alive(pid) for pid in running)
    assert await deployer.list() == []


async def test_a_killed_replica_is_restarted(deployer: LocalDeployer) -> None:
    deployment = await deployer.deploy(spec(replicas=1))
    (old_pid,) = pids(deployment)
    os.killpg(old_pid, signal.SIGKILL)

    async def restarted() -> bool:
        (replica,) = (await deployer.status("smol")).replicas
        return replica.restarts == 1 and replica.state == ReplicaState.READY

    await until(restarted)
    now = await deployer.status("smol")
    (replica,) = now.replicas
    assert replica.pid not in (None, old_pid)
    assert replica.last_exit_code == -signal.SIGKILL
    assert replica.base_url == deployment.replicas[0].base_url  # same port, same upstream
    assert await ask(now.base_urls[0], "smol")


async def test_a_replica_that_stops_answering_is_restarted(
    catalog: ModelCatalog, tmp_path: Path
) -> None:
    impatient = options(tmp_path, unhealthy_after=2, term_grace_seconds=1, probe_timeout_seconds=1)
    deployer = LocalDeployer(POOL, catalog=catalog, options=impatient)
    try:
        deployment = await deployer.deploy(spec(replicas=1))
        (old_pid,) = pids(deployment)
        os.kill(old_pid, signal.SIGSTOP)  # alive, but answers nothing

        async def replaced() -> bool:
            (replica,) = (await deployer.status("smol")).replicas
            return replica.restarts == 1 and replica.state == ReplicaState.READY

        await until(replaced)
        assert not alive(old_pid)
        (replica,) = (await deployer.status("smol")).replicas
        assert replica.last_exit_code == -signal.SIGKILL  # SIGTERM waits on a stopped process
    finally:
        await deployer.close()


async def test_scaling_down_drains_a_replica_first(
    deployer: LocalDeployer, catalog: ModelCatalog
) -> None:
    deployment = await deployer.deploy(spec())
    backend = catalog.resolve("smol").backend
    request = ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": MESSAGES, "max_tokens": 48, "temperature": 0}
    )
    # One request on each replica (least outstanding), both in flight while scaling down.
    calls = [asyncio.create_task(backend.chat(request)) for _ in range(2)]

    async def both_in_flight() -> bool:
        return sum(r.in_flight for r in (await deployer.status("smol")).replicas) == 2

    await until(both_in_flight, 10)
    scaled = await deployer.scale("smol", 1)
    replies = await asyncio.gather(*calls)  # the drained replica finished its request
    assert all(r["choices"][0]["message"]["content"] for r in replies)
    assert [r.index for r in scaled.replicas] == [0]
    gone = set(pids(deployment)) - set(pids(scaled))
    assert len(gone) == 1
    assert not alive(gone.pop())
    reply = await backend.chat(request.model_copy(update={"max_tokens": 4}))
    assert reply["choices"][0]["message"]["content"]


async def test_scaling_outside_the_bounds_is_refused(deployer: LocalDeployer) -> None:
    await deployer.deploy(spec(replicas=1))
    with pytest.raises(InvalidRequestError, match="between 1 and 2 replicas, not 3"):
        await deployer.scale("smol", 3)
    with pytest.raises(ConflictError):
        await deployer.deploy(spec(replicas=1))


async def test_stop_removes_everything(deployer: LocalDeployer, catalog: ModelCatalog) -> None:
    deployment = await deployer.deploy(spec())
    running = pids(deployment)
    assert catalog.resolve("smol").backend is deployer.backend("smol")
    await deployer.stop("smol", drain_seconds=1)
    assert "smol" not in catalog.names()
    assert not any(alive(pid) for pid in running)
    assert await deployer.list() == []


async def test_a_replica_that_cannot_load_fails_the_deploy(
    catalog: ModelCatalog, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    deployer = LocalDeployer(
        POOL, catalog=catalog, options=options(tmp_path, startup_timeout_seconds=4)
    )
    try:
        with pytest.raises(DeploymentFailedError, match="did not become ready") as raised:
            await deployer.deploy(spec(replicas=1, path=broken))
        assert "the log ends" in raised.value.message
        assert await deployer.list() == []
        assert catalog.names() == []
    finally:
        await deployer.close()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, LocalDeployer]]:
    settings = Settings(data_dir=tmp_path, auth={"bootstrap_key": KEY}, models={})  # type: ignore[arg-type,unused-ignore]
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    deployer = LocalDeployer(POOL, catalog=platform.catalog, options=options(tmp_path))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
    try:
        async with openai.AsyncOpenAI(
            base_url="http://atrium/v1", api_key=KEY, http_client=http, max_retries=0
        ) as client:
            yield client, deployer
    finally:
        await deployer.close()
        await platform.close()


async def test_the_gateway_routes_to_the_replicas(
    gateway: tuple[openai.AsyncOpenAI, LocalDeployer],
) -> None:
    client, deployer = gateway
    await deployer.deploy(spec())
    assert "smol" in [m.id async for m in client.models.list()]
    for _ in range(4):
        reply = await client.chat.completions.create(
            model="smol",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=4,
            temperature=0,
        )
        assert reply.choices[0].message.content
    await deployer.stop("smol", drain_seconds=1)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
