"""Session cookies become the Authorization header; unsafe methods need the CSRF token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from atrium.users.sessions import CSRF_HEADER, SESSION_COOKIE, CsrfTokens, SessionCookieMiddleware

SECRET = "atr-" + "s" * 43


async def echo_authorization(scope: Scope, receive: Receive, send: Send) -> None:
    headers = dict(scope["headers"])
    body = headers.get(b"authorization", b"-")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def csrf() -> CsrfTokens:
    return CsrfTokens(b"server key")


@pytest.fixture
def client(csrf: CsrfTokens) -> httpx.AsyncClient:
    app = SessionCookieMiddleware(echo_authorization, csrf=csrf)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _cookie(secret: str = SECRET) -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={secret}; other=1"}


def test_the_token_depends_on_session_and_server_key(csrf: CsrfTokens) -> None:
    token = csrf.for_session(SECRET)
    assert csrf.matches(SECRET, token)
    assert not csrf.matches("atr-" + "t" * 43, token)
    assert not CsrfTokens(b"another key").matches(SECRET, token)
    assert not csrf.matches(SECRET, None)
    assert not csrf.matches(SECRET, "")


async def test_a_get_with_the_cookie_carries_the_session(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/models", headers=_cookie())
    assert resp.text == f"Bearer {SECRET}"


async def test_a_post_without_the_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/chat/completions", headers=_cookie())
    assert resp.status_code == 403
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == "csrf_failed"
    assert error["type"] == "permission_error"
    wrong = await client.post("/v1/chat/completions", headers={**_cookie(), CSRF_HEADER: "forged"})
    assert wrong.status_code == 403


async def test_a_post_with_the_csrf_token_passes(
    client: httpx.AsyncClient, csrf: CsrfTokens
) -> None:
    headers = {**_cookie(), CSRF_HEADER: csrf.for_session(SECRET)}
    resp = await client.delete("/v1/conversations/x", headers=headers)
    assert resp.status_code == 200
    assert resp.text == f"Bearer {SECRET}"


async def test_an_authorization_header_wins_over_the_cookie(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/x", headers={**_cookie(), "authorization": "Bearer key-1"})
    assert resp.status_code == 200
    assert resp.text == "Bearer key-1"


async def test_login_ignores_a_stale_cookie(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/auth/login", headers=_cookie())
    assert resp.status_code == 200
    assert resp.text == "-"


async def test_a_malformed_cookie_is_ignored(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/x", headers=_cookie("short\r\nInjected: 1"))
    assert resp.status_code == 200
    assert resp.text == "-"
