"""The CLI's key and user changes announced on a real Redis Streams bus, as the admin API
announces them: a replica that cached a key drops it when `atrium keys revoke` runs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from atrium.bus import EVENT_TYPES, Event, RedisStreamsEventBus
from atrium.bus.events import KeyChanged, KeyCreated, UserChanged
from atrium.cli import app
from atrium.core.errors import AuthenticationError
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.db import Database
from atrium.store.keys import ApiKeyRepository
from atrium.users.cli import users_app

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
CHEAP = {"ATRIUM_WEB__PASSWORD_TIME_COST": "1", "ATRIUM_WEB__PASSWORD_MEMORY_KIB": "8192"}


@pytest.fixture
async def bus_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """Settings (by environment) of a CLI on a Redis bus with a prefix of this test's own."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-test:{uuid4().hex}:"
    env = {"ATRIUM_DATA_DIR": str(tmp_path), "ATRIUM_BUS__BACKEND": "redis",
           "ATRIUM_BUS__STREAM_PREFIX": prefix, "ATRIUM_REDIS__URL": "redis://127.0.0.1:6379/0",
           **CHEAP}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield client, prefix
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def invoke(command: Any, *args: str) -> Result:
    # In a thread: the CLI runs its own event loop (asyncio.run).
    return await asyncio.to_thread(CliRunner().invoke, command, list(args))


async def published(redis: aioredis.Redis, prefix: str, event_type: type[Event]) -> list[Any]:
    """The events of ``event_type`` in its stream, decoded as a consumer would."""
    entries: Any = await redis.xrange(prefix + event_type.type)
    return [EVENT_TYPES[f[b"type"].decode()].model_validate_json(f[b"data"]) for _, f in entries]


async def still_served(replica: KeyAuthenticator, secret: str) -> bool:
    """Whether ``replica`` still takes ``secret``; False once it refuses it as revoked."""
    try:
        await replica.authenticate(f"Bearer {secret}")
    except AuthenticationError as exc:
        return exc.code != "revoked_api_key"
    return True


async def test_a_key_revoked_by_the_cli_is_dropped_from_a_replicas_cache(
    bus_env: tuple[aioredis.Redis, str], tmp_path: Path
) -> None:
    redis, prefix = bus_env
    made = await invoke(app, "keys", "create", "ci", "--owner", "ops")
    assert made.exit_code == 0, made.output
    secret = made.output.split("this once:")[1].split()[0]
    (created,) = await published(redis, prefix, KeyCreated)
    assert (created.name, created.owner, created.scopes) == ("ci", "ops", ["inference"])

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}")
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20)
    # A replica whose cache would serve the key for an hour unless told otherwise.
    replica = KeyAuthenticator(ApiKeyRepository(db), ttl=3600, bus=bus)
    try:
        await replica.start()
        principal = await replica.authenticate(f"Bearer {secret}")
        assert principal.key_id == created.key_id

        revoked = await invoke(app, "keys", "revoke", created.key_id)
        assert revoked.exit_code == 0, revoked.output
        async with asyncio.timeout(TIMEOUT_S):
            while True:  # until the replica has heard of it
                if not await still_served(replica, secret):
                    break
                await asyncio.sleep(0.02)
        cached = await invoke(app, "keys", "cache", created.key_id, "off")
        assert cached.exit_code == 0, cached.output
    finally:
        await replica.close()
        await bus.close()
        await db.close()
    changed = await published(redis, prefix, KeyChanged)
    assert [event.key_id for event in changed] == [created.key_id, created.key_id]


async def test_users_created_and_changed_by_the_cli_are_announced(
    bus_env: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = bus_env
    made = await invoke(users_app, "create-admin", "Root", "--password", "root-password-1")
    assert made.exit_code == 0, made.output
    reset = await invoke(users_app, "set-password", "root")
    assert reset.exit_code == 0, reset.output

    events = await published(redis, prefix, UserChanged)
    assert [(e.username, e.change, e.fields, e.role) for e in events] == [
        ("root", "created", [], "admin"),
        ("root", "updated", ["password"], "admin"),
    ]
    assert events[0].user_id == events[1].user_id


async def test_a_bus_that_is_down_is_reported_after_the_change(
    bus_env: tuple[aioredis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ATRIUM_REDIS__URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("ATRIUM_BUS__PUBLISH_ATTEMPTS", "1")

    made = await invoke(app, "keys", "create", "ci")
    assert made.exit_code == 1
    assert "It is shown only this once" in made.output  # the secret is not lost
    assert "the change is stored, but announcing it on the bus failed" in made.output

    monkeypatch.delenv("ATRIUM_BUS__BACKEND")  # the in-process bus: nobody to tell
    listed = await invoke(app, "keys", "create", "quiet")
    assert listed.exit_code == 0, listed.output
