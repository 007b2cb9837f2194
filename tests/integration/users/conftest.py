"""A small app with the web UI's routes on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest_asyncio
from fastapi import FastAPI
from pydantic import SecretStr

from atrium.api.errors import install_error_handlers
from atrium.api.ui import install_web
from atrium.core.settings import WebSettings
from atrium.gateway.auth import KeyAuthenticator
from atrium.store import ApiKeyRepository, Database, Scope
from atrium.users.web import WebServices, build_web

ADMIN_PASSWORD = "admin-password-123"


@dataclass
class WebApp:
    """The app, its services and an API key (not a user) for it."""

    web: WebServices
    keys: ApiKeyRepository
    api_key: str
    app: FastAPI

    def client(self) -> httpx.AsyncClient:
        """A client with its own cookie jar, as one browser."""
        transport = httpx.ASGITransport(app=self.app, client=("10.1.2.3", 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://atrium.test")


@pytest_asyncio.fixture
async def webapp(database: Database, tmp_path: Path) -> AsyncIterator[WebApp]:
    settings = WebSettings(
        password_time_cost=1,
        password_memory_kib=8 * 1024,
        login_max_failures=3,
        admin_password=SecretStr(ADMIN_PASSWORD),
        ui_dir=tmp_path / "no-ui",
    )
    keys = ApiKeyRepository(database)
    auth = KeyAuthenticator(keys, ttl=0)
    web = build_web(settings, db=database, keys=keys, auth=auth, secret_key=b"k" * 32)
    await web.start()
    key = await keys.create(name="plain key", scopes={Scope.ADMIN, Scope.INFERENCE})
    app = FastAPI()
    install_error_handlers(app)
    install_web(app, web, auth)
    yield WebApp(web, keys, key.secret, app)


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Sign in; the CSRF token for the client's next state-changing requests."""
    resp = await client.post("/v1/auth/login", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["csrf_token"]
    return token
