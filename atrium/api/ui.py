"""The web UI's built files at ``/``: hashed assets cached for good, ``index.html`` for
every client-side route, and a page saying how to build the UI when it is missing."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse, HTMLResponse
from starlette.types import Receive, Scope, Send

from atrium.api.auth import auth_router, users_router
from atrium.api.conversations import conversations_router
from atrium.api.errors import error_response
from atrium.api.oidc import oidc_router, providers_router
from atrium.core.errors import NotFoundError
from atrium.gateway.auth import KeyAuthenticator
from atrium.users.sessions import SessionCookieMiddleware
from atrium.users.web import WebServices

DEFAULT_UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui_dist"
# Paths that belong to the API: an unknown one is a JSON 404, never the UI's page.
_API_PREFIXES: Final = ("v1/", "v1", "healthz", "readyz", "metrics", "docs", "redoc", "openapi")
_IMMUTABLE: Final = "public, max-age=31536000, immutable"
_SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}

NOT_BUILT_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Atrium: the web UI is not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
 line-height: 1.5; padding: 0 1rem">
<h1>The web UI is not built</h1>
<p>Atrium's API is running (see <a href="/docs">/docs</a>), but the files of the web UI
are missing from <code>{where}</code>.</p>
<p>Build them with <code>make ui</code> (Node.js 20 or later and npm), or start Atrium with
<code>make run</code>, which builds the UI when its sources changed.</p>
</body></html>
"""


class WebUiApp:
    """ASGI app for every path no API route matched (the router's ``default``): the UI's
    files, ``index.html`` for client-side routes, JSON 404s for API paths."""

    def __init__(self, dist: Path | None = None) -> None:
        self._root = (dist or DEFAULT_UI_DIR).resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"]).lstrip("/")
        try:
            response = self._respond(path, str(scope["method"]))
        except NotFoundError as error:
            response = error_response(error)
        await response(scope, receive, send)

    def _respond(self, path: str, method: str) -> Response:
        if path.startswith(_API_PREFIXES) or method not in ("GET", "HEAD"):
            raise NotFoundError("no such route", code="unknown_route")
        index = self._root / "index.html"
        if not index.is_file():
            page = NOT_BUILT_PAGE.replace("{where}", html.escape(str(self._root)))
            return HTMLResponse(page, status_code=503, headers={"cache-control": "no-store"})
        found = _file_in(self._root, path)
        if found is not None:
            cache = _IMMUTABLE if path.startswith("assets/") else "no-cache"
            return FileResponse(found, headers={"cache-control": cache, **_SECURITY_HEADERS})
        if "." in path.rsplit("/", 1)[-1]:
            raise NotFoundError(f"no file {path!r} in the web UI", code="unknown_route")
        return FileResponse(index, headers={"cache-control": "no-cache", **_SECURITY_HEADERS})


def install_web(app: FastAPI, web: WebServices, auth: KeyAuthenticator) -> None:
    """Sign-in, users and conversations routes, the session-cookie middleware, and the
    UI for every path no route matches (so routers included later still win)."""
    app.include_router(auth_router(web.users, auth, web.cookies))
    app.include_router(providers_router(web.oidc))
    if web.oidc is not None:
        app.include_router(oidc_router(web.oidc, web.cookies))
    app.include_router(users_router(web.users, auth))
    app.include_router(conversations_router(web.conversations, web.users, auth))
    app.router.default = WebUiApp(web.ui_dir)
    app.add_middleware(SessionCookieMiddleware, csrf=web.csrf)


def _file_in(root: Path, path: str) -> Path | None:
    """The file at ``path`` under ``root``; None when absent or outside it."""
    if not path:
        return None
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate
