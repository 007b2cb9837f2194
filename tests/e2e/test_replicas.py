"""Two gateway processes sharing PostgreSQL and Redis admit exactly a key's limit."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.conftest import RemoteAtriumServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PG_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
RPM = 5  # one request refills every 12 s: far longer than the burst takes
CONFIG = {"models": {"minilm": {"backend": "onnx_embedding"}}}


def _admin(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="module")
def shared_env() -> Iterator[dict[str, str]]:
    database = f"atrium_replicas_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{database}"')
    try:
        yield {
            "ATRIUM_STORE__URL": f"{PG_SERVER}/{database}",
            "ATRIUM_LIMITS__BACKEND": "redis",
            "ATRIUM_LIMITS__REDIS_PREFIX": f"atrium-test-{database}:",
            "ATRIUM_AUTH__BOOTSTRAP_KEY": "atr-" + secrets.token_urlsafe(32),
        }
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, shared_env: dict[str, str]
) -> Iterator[list[RemoteAtriumServer]]:
    servers = [
        RemoteAtriumServer(tmp_path_factory.mktemp(f"replica{i}"), env=shared_env, config=CONFIG)
        for i in range(2)
    ]
    for server in servers:
        server.api_key = shared_env["ATRIUM_AUTH__BOOTSTRAP_KEY"]
    with servers[0], servers[1]:
        yield servers


async def _embed(client: httpx.AsyncClient, key: str) -> int:
    response = await client.post(
        "/v1/embeddings",
        json={"model": "minilm", "input": "limits"},
        headers={"authorization": f"Bearer {key}"},
    )
    return response.status_code


async def _burst(replicas: list[RemoteAtriumServer], key: str, count: int) -> list[int]:
    clients = [httpx.AsyncClient(base_url=r.url_root, timeout=60) for r in replicas]
    try:
        calls = [_embed(clients[i % len(clients)], key) for i in range(count)]
        return await asyncio.gather(*calls)
    finally:
        for client in clients:
            await client.aclose()


def test_two_replicas_admit_exactly_the_rpm(replicas: list[RemoteAtriumServer]) -> None:
    key = replicas[0].create_key(name="shared", rpm=RPM)["key"]
    statuses = asyncio.run(_burst(replicas, key, 3 * RPM))
    assert statuses.count(200) == RPM
    assert statuses.count(429) == 2 * RPM


def test_a_key_created_on_one_replica_works_on_the_other(
    replicas: list[RemoteAtriumServer], tmp_path: Path
) -> None:
    key = replicas[1].create_key(name="other")["key"]
    with replicas[0].get_client(api_key=key) as client:
        vectors = client.embeddings.create(model="minilm", input=["a", "b"])
    assert len(vectors.data) == 2
