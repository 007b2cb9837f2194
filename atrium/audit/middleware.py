"""The one place admin and security-relevant API calls are recorded: a pure ASGI middleware.

It sits inside the session-cookie middleware (so a signed-in browser's session is the
caller's key) and around every router, so no route has to remember to audit itself.
Recorded, after the response is sent:

- every request under ``/v1/admin/``, ``/v1/audit`` and ``/v1/auth/``, reads included
  (who looked at keys, secrets or the audit log is itself worth knowing);
- every request that changes something (``POST``, ``PUT``, ``PATCH``, ``DELETE``) under
  ``/v1/``, except inference (recorded from ``request.completed`` events instead) and
  a user's own conversations.

The entry names the caller's key (resolved through the authenticator's cache), the
route (``DELETE /v1/admin/keys/{key_id}``), the path as the target, the client's
address, the outcome from the status code, and the request id. A change's query
parameters are in its detail (``DELETE …/identities?issuer=&subject=`` says which
identity went), except under ``/v1/auth/`` (a sign-in's code and state) and the values
of parameters whose names say they hold a secret. Never a body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.audit.recorder import outcome_of
from atrium.core.errors import AtriumError
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.audit import NewAuditEntry

ALWAYS = ("/v1/admin/", "/v1/audit", "/v1/auth/")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_AUDITED = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/conversations",
)
#: Query parameters whose values an entry never holds.
SECRET_PARAM = re.compile(r"secret|token|password|passwd|key|code|state|credential", re.I)
#: The most query parameters an entry keeps, and the longest value kept of each.
MAX_PARAMS, MAX_VALUE = 20, 256


def audited(method: str, path: str) -> bool:
    """Whether a request to ``path`` with ``method`` gets an audit entry."""
    if path.startswith(ALWAYS):
        return True
    return method in CHANGES and path.startswith("/v1/") and not path.startswith(NOT_AUDITED)


class AuditMiddleware:
    """Records audited requests (see the module docstring) through ``record``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        record: Callable[[NewAuditEntry], bool],
        auth: KeyAuthenticator,
    ) -> None:
        self.app = app
        self._record = record
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        status = 500  # what the caller sees if the app raises before answering
        started = time.perf_counter()
        # Before the call: a request that revokes its own key still names it.
        actor = await self._actor(scope)

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._record(_entry(scope, actor, status, elapsed_ms))

    async def _actor(self, scope: Scope) -> tuple[str | None, str | None]:
        authorization = _header(scope, b"authorization")
        if authorization is None:
            return None, None
        try:
            principal = await self._auth.authenticate(authorization)
        except (AtriumError, SQLAlchemyError, OSError):
            return None, None  # a wrong, revoked or expired key (or no store): no one to name
        return principal.key_id, principal.key.name


def _entry(
    scope: Scope, actor: tuple[str | None, str | None], status: int, elapsed_ms: float
) -> NewAuditEntry:
    route = scope.get("route")
    template = getattr(route, "path", None) or scope["path"]
    client = scope.get("client")
    key_id, key_name = actor
    detail = {
        "status": status,
        "duration_ms": round(elapsed_ms, 3),
        "request_id": scope.get("state", {}).get("request_id"),
        "key_name": key_name,
    }
    query = _query(scope)
    if query:
        detail["query"] = query
    return NewAuditEntry(
        action=f"{scope['method']} {template}",
        target=scope["path"],
        outcome=outcome_of(status),
        actor=key_id,
        address=client[0] if client else None,
        detail=detail,
    )


def _query(scope: Scope) -> dict[str, str] | None:
    """A change's query parameters as its entry keeps them (see the module docstring)."""
    raw: bytes = scope.get("query_string", b"")
    if not raw or scope["method"] not in CHANGES or scope["path"].startswith("/v1/auth/"):
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)[:MAX_PARAMS]
    return {
        name[:MAX_VALUE]: "[redacted]" if SECRET_PARAM.search(name) else value[:MAX_VALUE]
        for name, value in pairs
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None
