"""Two API replicas on one database and one Redis: any replica serves any user's chat.

Each replica has its own authenticator and its own hot-state client; they share only
the store and Redis (127.0.0.1:6379, under a prefix of this test's own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import update

from atrium.api.errors import install_error_handlers
from atrium.api.ui import install_web
from atrium.core.settings import WebSettings
from atrium.gateway.auth import KeyAuthenticator
from atrium.store import ApiKeyRepository, Database
from atrium.store.hot import RedisHotState
from atrium.store.users import ConversationRow
from atrium.users.web import WebServices, build_web
from tests.integration.users.conftest import ADMIN_PASSWORD, sign_in

pytestmark = pytest.mark.integration


@dataclass
class Replicas:
    one: FastAPI
    two: FastAPI
    redis: aioredis.Redis
    prefix: str


def _replica(database: Database, hot: RedisHotState, ui_dir: Path) -> tuple[FastAPI, WebServices]:
    settings = WebSettings(
        password_time_cost=1, password_memory_kib=8 * 1024,
        admin_password=SecretStr(ADMIN_PASSWORD), ui_dir=ui_dir,
    )  # fmt: skip
    keys = ApiKeyRepository(database)
    auth = KeyAuthenticator(keys, ttl=0)
    web = build_web(
        settings, db=database, keys=keys, auth=auth, secret_key=b"k" * 32, hot=hot,
        hot_ttl_seconds=60,
    )  # fmt: skip
    app = FastAPI()
    install_error_handlers(app)
    install_web(app, web, auth)
    return app, web


@pytest_asyncio.fixture
async def replicas(database: Database, tmp_path: Path) -> AsyncIterator[Replicas]:
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-test:{uuid4().hex}:"
    one, web = _replica(database, RedisHotState(client, prefix=prefix), tmp_path / "ui")
    two, _ = _replica(database, RedisHotState(client, prefix=prefix), tmp_path / "ui")
    await web.start()
    try:
        yield Replicas(one, two, client, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _browser(app: FastAPI, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://atrium.test", cookies=cookies)


async def test_a_chat_is_served_by_either_replica_and_writes_are_seen_by_both(
    replicas: Replicas, database: Database
) -> None:
    async with _browser(replicas.one) as first:
        headers = {"x-csrf-token": await sign_in(first, "admin", ADMIN_PASSWORD)}
        made = await first.post(
            "/v1/conversations",
            json={"title": "Plans", "model": "smollm2",
                  "messages": [{"role": "user", "content": "hello"}]},
            headers=headers,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        conv = made.json()["id"]
        read = (await first.get(f"/v1/conversations/{conv}")).json()
        assert read["messages"] == [{"role": "user", "content": "hello", "meta": None}]
        cached = [key async for key in replicas.redis.scan_iter(match=replicas.prefix + "*")]
        assert len(cached) == 1

        # The same browser's next request lands on the other replica.
        async with _browser(replicas.two, first.cookies) as second:
            # Changed in the store behind the cache's back: replica two still answers
            # from the shared copy (its own process never read this chat).
            async with database.session() as session:
                await session.execute(
                    update(ConversationRow).where(ConversationRow.id == conv).values(title="x")
                )
                await session.commit()
            assert (await second.get(f"/v1/conversations/{conv}")).json()["title"] == "Plans"

            # A write through replica two is seen by replica one at once.
            put = await second.put(
                f"/v1/conversations/{conv}/messages",
                json={"messages": [{"role": "user", "content": "hello"},
                                   {"role": "assistant", "content": "hi"}]},
                headers=headers,
            )  # fmt: skip
            assert put.status_code == 200, put.text
            seen = (await first.get(f"/v1/conversations/{conv}")).json()
            assert [m["content"] for m in seen["messages"]] == ["hello", "hi"]
            assert seen["title"] == "x"  # re-read from the store after the write

            renamed = await first.patch(
                f"/v1/conversations/{conv}", json={"title": "Q4"}, headers=headers
            )
            assert renamed.json()["title"] == "Q4"
            assert (await second.get(f"/v1/conversations/{conv}")).json()["title"] == "Q4"

            assert (await second.delete(f"/v1/conversations/{conv}", headers=headers)).is_success
            assert (await first.get(f"/v1/conversations/{conv}")).status_code == 404
