"""A key or web session revoked on one replica is refused by the others at once, not when
their key cache expires: two gateway replicas sharing PostgreSQL and a Redis event bus."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.app import Platform, build_app, build_platform
from atrium.bus import RedisStreamsEventBus, is_replica_group
from atrium.core.settings import Settings
from atrium.users.sessions import SESSION_COOKIE

pytestmark = pytest.mark.integration

ADMIN_KEY = "atr-" + "k" * 40
# Long enough that only the key.changed event, never expiry, can empty the cache in a test.
CACHE_TTL = 3600


@pytest_asyncio.fixture
async def platforms(
    tmp_path: Path, empty_postgres_url: str
) -> AsyncIterator[list[tuple[Platform, httpx.AsyncClient]]]:
    prefix = f"atrium-test-keys-{secrets.token_hex(4)}:"
    platforms, clients = [], []
    for i in range(2):
        settings = Settings.model_validate(
            {
                "data_dir": tmp_path / f"r{i}",
                "store": {"url": empty_postgres_url},
                "bus": {"backend": "redis", "stream_prefix": prefix},
                "auth": {"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": CACHE_TTL},
                "models": {},
                # Two platforms in one process: DBOS is one per process, and these
                # replicas only serve the API.
                "workflows": {"enabled": False},
            }
        )
        platform = build_platform(settings, announce_key=lambda _: None)
        app = build_app(settings, platform)
        await platform.start()
        platforms.append(platform)
        clients.append(
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://atrium")
        )
    try:
        yield list(zip(platforms, clients, strict=True))
    finally:
        for client in clients:
            await client.aclose()
        for platform in platforms:
            await platform.close()
        cleanup = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        # Replicas that stopped cleanly leave no consumer group of their own behind.
        streams = await RedisStreamsEventBus(cleanup, stream_prefix=prefix).streams()
        left = [g.name for s in streams for g in s.groups if is_replica_group(g.name)]
        keys = [k async for k in cleanup.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleanup.delete(*keys)
        await cleanup.aclose()
        assert left == []


@pytest.fixture
def replicas(
    platforms: list[tuple[Platform, httpx.AsyncClient]],
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    return platforms[0][1], platforms[1][1]


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _refused(client: httpx.AsyncClient, path: str, secret: str) -> httpx.Response:
    """Ask until the replica refuses ``secret``; bounded so a miss fails, not hangs."""
    async with asyncio.timeout(10):
        while True:
            answer = await client.get(path, headers=_bearer(secret))
            if answer.status_code != 200:
                return answer
            await asyncio.sleep(0.02)


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    first, second = replicas
    created = await first.post(
        "/v1/admin/keys", json={"name": "ops", "scopes": ["admin"]}, headers=_bearer(ADMIN_KEY)
    )
    assert created.status_code == 201, created.text
    secret, key_id = created.json()["key"], created.json()["id"]
    # The second replica verifies the key and caches it for an hour.
    assert (await second.get("/v1/admin/teams", headers=_bearer(secret))).status_code == 200

    revoked = await first.delete(f"/v1/admin/keys/{key_id}", headers=_bearer(ADMIN_KEY))
    assert revoked.status_code == 200

    refused = await _refused(second, "/v1/admin/teams", secret)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"
    # Other keys stay cached and served.
    assert (await second.get("/v1/admin/teams", headers=_bearer(ADMIN_KEY))).status_code == 200


async def test_a_web_session_ended_on_one_replica_is_refused_by_the_other(
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    first, second = replicas
    user = {"username": "dana", "password": "dana-password-1"}
    created = await first.post("/v1/admin/users", json=user, headers=_bearer(ADMIN_KEY))
    assert created.status_code == 201, created.text
    login = await first.post("/v1/auth/login", json=user)
    assert login.status_code == 200, login.text
    session = login.cookies[SESSION_COOKIE]
    me = await second.get("/v1/auth/me", headers=_bearer(session))
    assert me.status_code == 200
    assert me.json()["username"] == "dana"

    out = await first.post("/v1/auth/logout", headers=_bearer(session))
    assert out.status_code == 200, out.text

    refused = await _refused(second, "/v1/auth/me", session)
    assert refused.status_code == 401


async def test_a_team_edited_on_one_replica_applies_on_the_other_at_once(
    platforms: list[tuple[Platform, httpx.AsyncClient]],
) -> None:
    (_, first), (other, _) = platforms
    admin = _bearer(ADMIN_KEY)
    made = await first.post("/v1/admin/teams", json={"name": "ml", "rpm": 5}, headers=admin)
    team = made.json()
    ops = (await first.post("/v1/admin/teams", json={"name": "ops"}, headers=admin)).json()
    created = await first.post("/v1/admin/keys", json={"name": "svc", "team": "ml"}, headers=admin)
    secret, key_id = created.json()["key"], created.json()["id"]
    # The other replica verifies the key, with its team's limits, and caches it for an hour.
    assert (await _team_of(other, secret))["rpm"] == 5

    body = {"rpm": 7, "budget_usd": 20.0, "budget_period": "day"}
    changed = await first.patch(f"/v1/admin/teams/{team['id']}", json=body, headers=admin)

    assert changed.status_code == 200, changed.text
    assert changed.json() | body == changed.json()
    async with asyncio.timeout(10):
        while (await _team_of(other, secret))["rpm"] != 7:  # noqa: ASYNC110 - polls a cache
            await asyncio.sleep(0.02)
    assert (await _team_of(other, secret))["budget_usd"] == 20.0

    # Membership: moving the key to another team reaches the other replica as well.
    moved = await first.patch(f"/v1/admin/keys/{key_id}", json={"team": "ops"}, headers=admin)
    assert moved.status_code == 200, moved.text
    assert moved.json()["team"]["id"] == ops["id"]
    async with asyncio.timeout(10):
        while (await _team_of(other, secret))["id"] != ops["id"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    # A bad edit is a 400 naming the field, and changes nothing.
    before = (await first.get(f"/v1/admin/teams/{team['id']}", headers=admin)).json()
    bad: list[tuple[dict[str, object], str | None]] = [
        ({}, None),
        ({"rpm": 0}, "rpm"),
        ({"budget_period": None}, "budget_period"),  # a budget without its period
        ({"name": "renamed"}, "name"),
        ({"rpm": "5"}, "rpm"),
    ]
    for edit, param in bad:
        answer = await first.patch(f"/v1/admin/teams/{team['id']}", json=edit, headers=admin)

        assert answer.status_code == 400, (edit, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert answer.json()["error"]["param"] == param, edit
    assert (await first.get(f"/v1/admin/teams/{team['id']}", headers=admin)).json() == before
    missing = await first.patch("/v1/admin/teams/nope", json={"rpm": 1}, headers=admin)
    assert missing.status_code == 404


async def _team_of(platform: Platform, secret: str) -> dict[str, object]:
    principal = await platform.auth.authenticate(f"Bearer {secret}")
    assert principal.key.team is not None
    return principal.key.team.to_public()
