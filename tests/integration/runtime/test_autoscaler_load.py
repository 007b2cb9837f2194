"""The autoscaler on real replicas: up under load, down after it, and back from zero."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from atrium.runtime.autoscaler import Autoscaler
from atrium.runtime.backends.llamacpp import bundled_gguf
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers import Deployment, LocalDeployer, LocalDeployerOptions
from atrium.runtime.deployments import DeploymentSpec, PoolSpec
from atrium.runtime.schema import ChatCompletionRequest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POOL = [PoolSpec(name="test-cpu", kind="cpu", cpus=2, memory_gib=8)]


class Scaled:
    """The deployer as the autoscaler's scaler, remembering every change."""

    def __init__(self, deployer: LocalDeployer) -> None:
        self.deployer = deployer
        self.history: list[int] = []

    async def list(self) -> builtins.list[Deployment]:
        return await self.deployer.list()

    async def scale(self, name: str, replicas: int, reason: str = "") -> Deployment:
        self.history.append(replicas)
        return await self.deployer.scale(name, replicas)


def spec(low: int, high: int, delay: float) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": "smol",
            "model": {"name": "smol", "path": bundled_gguf()},
            "replicas": {"min": low, "max": high},
            "resources": {"cpus": 1},
            "autoscaling": {"target": 1, "scale_down_delay_seconds": delay},
            "context_length": 512,
        }
    )


@pytest_asyncio.fixture
async def deployer(tmp_path: Path) -> AsyncIterator[tuple[LocalDeployer, ModelCatalog]]:
    catalog = ModelCatalog([])
    options = LocalDeployerOptions(log_dir=tmp_path / "logs", startup_timeout_seconds=60)
    deployer = LocalDeployer(POOL, catalog=catalog, options=options)
    try:
        yield deployer, catalog
    finally:
        await deployer.close()


async def ask(catalog: ModelCatalog, tokens: int) -> str:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "smol",
            "messages": [{"role": "user", "content": "Write a short story about a fox."}],
            "max_tokens": tokens,
            "temperature": 0,
        }
    )
    answer = await catalog.resolve("smol").backend.chat(request)
    content: str = answer["choices"][0]["message"]["content"]
    return content


async def until(check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_replicas_rise_under_load_and_fall_after_it(
    deployer: tuple[LocalDeployer, ModelCatalog],
) -> None:
    local, catalog = deployer
    await local.deploy(spec(1, 2, delay=2))
    scaled = Scaled(local)
    autoscaler = Autoscaler(scaled, interval_seconds=0.3, up_cooldown_seconds=0.5)
    stop = asyncio.Event()

    async def user() -> None:
        while not stop.is_set():
            await ask(catalog, 48)

    await autoscaler.start()
    users = [asyncio.create_task(user()) for _ in range(4)]
    try:
        await until(lambda: ready_is(local, 2), 60)
        stop.set()
        await asyncio.gather(*users)
        await until(lambda: desired_is(local, 1), 30)
    finally:
        stop.set()
        for task in users:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*users)
        await autoscaler.close()
    assert scaled.history == [2, 1]


async def test_scaled_to_zero_the_next_request_waits_for_a_replica(
    deployer: tuple[LocalDeployer, ModelCatalog],
) -> None:
    local, catalog = deployer
    await local.deploy(spec(0, 1, delay=0.5))
    assert (await local.status("smol")).ready == 1  # proven to load, then idle
    scaled = Scaled(local)
    autoscaler = Autoscaler(scaled, interval_seconds=0.2)
    await autoscaler.start()
    try:
        await until(lambda: none_left(local), 30)
        assert (await catalog.resolve("smol").backend.health()).ready
        answers = await asyncio.gather(*(ask(catalog, 4) for _ in range(3)))
        assert all(isinstance(a, str) for a in answers)
        assert (await local.status("smol")).ready == 1
    finally:
        await autoscaler.close()
    assert scaled.history[0] == 0


async def ready_is(local: LocalDeployer, count: int) -> bool:
    return (await local.status("smol")).ready == count


async def none_left(local: LocalDeployer) -> bool:
    return (await local.status("smol")).replicas == []


async def desired_is(local: LocalDeployer, count: int) -> bool:
    return (await local.status("smol")).desired == count
