"""Sign-in, sessions, CSRF and the users admin API against a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from atrium.store import ApiKeyRow, Base, Database
from tests.integration.users.conftest import ADMIN_PASSWORD, WebApp, sign_in

pytestmark = pytest.mark.integration

USERS_TABLES = {"users", "user_sessions", "conversations", "conversation_messages"}


async def test_migration_0012_matches_the_orm_rows(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    ours = [d for d in diff if USERS_TABLES & _names(d)]
    assert ours == []


def _names(entry: object) -> set[str]:
    """Every table name an autogenerate diff entry mentions (nested tuples included)."""
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, (list, tuple)):
        return set().union(*(_names(part) for part in entry)) if entry else set()
    table = getattr(entry, "table", None)
    names = {str(getattr(entry, "name", ""))}
    return names | (set() if table is None else {str(table.name)})


async def test_wrong_password_and_unknown_user_get_the_same_answer(webapp: WebApp) -> None:
    async with webapp.client() as client:
        wrong = await client.post(
            "/v1/auth/login", json={"username": "admin", "password": "not the password"}
        )
        unknown = await client.post(
            "/v1/auth/login", json={"username": "nobody", "password": "not the password"}
        )
        missing = await client.post("/v1/auth/login", json={"username": "admin"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["message"] == "Incorrect username or password."
    assert "set-cookie" not in wrong.headers
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "password"


async def test_a_session_authenticates_and_needs_csrf_to_change_things(webapp: WebApp) -> None:
    async with webapp.client() as client:
        resp = await client.post(
            "/v1/auth/login", json={"username": "ADMIN", "password": ADMIN_PASSWORD}
        )
        assert resp.status_code == 200
        cookies = resp.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("atrium_session="))
        csrf_cookie = next(c for c in cookies if c.startswith("atrium_csrf="))
        assert "HttpOnly" in session
        assert "SameSite=strict" in session
        assert "Secure" not in session  # plain http here
        assert "HttpOnly" not in csrf_cookie
        csrf = resp.json()["csrf_token"]
        me = await client.get("/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["username"] == "admin"
        assert me.json()["role"] == "admin"
        assert me.json()["scopes"] == ["admin", "inference"]
        refused = await client.post("/v1/auth/logout")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        out = await client.post("/v1/auth/logout", headers={"x-csrf-token": csrf})
        assert out.status_code == 200
        after = await client.get("/v1/auth/me")
        assert after.status_code == 401


async def test_a_stolen_cookie_stops_working_after_logout(webapp: WebApp) -> None:
    async with webapp.client() as client:
        csrf = await sign_in(client, "admin", ADMIN_PASSWORD)
        secret = client.cookies["atrium_session"]
        await client.post("/v1/auth/logout", headers={"x-csrf-token": csrf})
    async with webapp.client() as thief:
        thief.cookies.set("atrium_session", secret)
        resp = await thief.get("/v1/auth/me")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "revoked_api_key"


async def test_an_expired_session_is_a_401(webapp: WebApp, database: Database) -> None:
    async with webapp.client() as client:
        await sign_in(client, "admin", ADMIN_PASSWORD)
        past = datetime.now(UTC) - timedelta(minutes=1)
        async with database.session() as session:
            await session.execute(
                update(ApiKeyRow).where(ApiKeyRow.name == "web session").values(expires_at=past)
            )
            await session.commit()
        resp = await client.get("/v1/auth/me")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "expired_api_key"


async def test_failed_logins_lock_out_that_name_from_that_address(webapp: WebApp) -> None:
    async with webapp.client() as client:
        for _ in range(3):
            resp = await client.post(
                "/v1/auth/login", json={"username": "admin", "password": "wrong password"}
            )
            assert resp.status_code == 401
        locked = await client.post(
            "/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) > 0


async def test_an_api_key_is_not_a_user(webapp: WebApp) -> None:
    async with webapp.client() as client:
        resp = await client.get(
            "/v1/auth/me", headers={"authorization": f"Bearer {webapp.api_key}"}
        )
        anonymous = await client.get("/v1/auth/me")
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "session_required"
    assert anonymous.status_code == 401


async def test_admins_create_list_change_and_disable_users(webapp: WebApp) -> None:
    async with webapp.client() as admin, webapp.client() as bob:
        csrf = await sign_in(admin, "admin", ADMIN_PASSWORD)
        headers = {"x-csrf-token": csrf}
        weak = await admin.post(
            "/v1/admin/users", json={"username": "bob", "password": "short"}, headers=headers
        )
        assert weak.status_code == 400
        assert weak.json()["error"]["param"] == "password"
        created = await admin.post(
            "/v1/admin/users",
            json={"username": "bob", "password": "bob-password-1", "role": "builder"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        bob_id = created.json()["id"]
        again = await admin.post(
            "/v1/admin/users",
            json={"username": "Bob", "password": "bob-password-1"},
            headers=headers,
        )
        assert again.status_code == 409
        listed = (await admin.get("/v1/admin/users")).json()["data"]
        assert [u["username"] for u in listed] == ["admin", "bob"]
        assert "password_hash" not in listed[1]

        await sign_in(bob, "bob", "bob-password-1")
        assert (await bob.get("/v1/auth/me")).json()["role"] == "builder"
        forbidden = await bob.get("/v1/admin/users")
        assert forbidden.status_code == 403

        patched = await admin.patch(
            f"/v1/admin/users/{bob_id}", json={"disabled": True}, headers=headers
        )
        assert patched.json()["disabled"] is True
        # Disabling ends bob's session at once, and he cannot sign in again.
        assert (await bob.get("/v1/auth/me")).status_code == 401
        relogin = await bob.post(
            "/v1/auth/login", json={"username": "bob", "password": "bob-password-1"}
        )
        assert relogin.status_code == 403
        assert relogin.json()["error"]["code"] == "account_disabled"

        me = (await admin.get("/v1/auth/me")).json()
        self_demote = await admin.patch(
            f"/v1/admin/users/{me['id']}", json={"role": "user"}, headers=headers
        )
        assert self_demote.status_code == 400
        bad_role = await admin.patch(
            f"/v1/admin/users/{bob_id}", json={"role": "owner"}, headers=headers
        )
        assert bad_role.status_code == 400
        missing = await admin.patch("/v1/admin/users/nope", json={}, headers=headers)
        assert missing.status_code == 404


async def test_the_first_admin_is_created_once(webapp: WebApp) -> None:
    announced: list[tuple[str, str]] = []
    created = await webapp.web.users.ensure_first_admin(
        "other", None, lambda u, p: announced.append((u, p))
    )
    assert created is None
    assert announced == []
