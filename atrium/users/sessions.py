"""Browser sessions: the cookies, CSRF tokens, and the middleware that turns a session
cookie into the ``Authorization`` header every route already understands.

A session's secret is an API key that expires with the session. The middleware
copies it from the HttpOnly cookie into ``Authorization: Bearer`` when a request
has no ``Authorization`` of its own, so one authenticator (``KeyAuthenticator``)
serves keys and sessions alike. State-changing requests must also carry the
session's CSRF token in ``X-CSRF-Token`` (signed double submit: the token is an
HMAC of the session secret, so a cookie planted by another site cannot forge it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from atrium.core.errors import PermissionDeniedError

SESSION_COOKIE: Final = "atrium_session"
CSRF_COOKIE: Final = "atrium_csrf"
CSRF_HEADER: Final = "x-csrf-token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths where a session cookie is never used: signing in starts a new session.
_NO_SESSION_PATHS: Final = ("/v1/auth/login",)
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{20,200}$")


class CsrfTokens:
    """Derives a session's CSRF token from its secret with a server-side key."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"atrium-csrf\x00" + key).digest()

    def for_session(self, session_secret: str) -> str:
        """The CSRF token of the session whose cookie holds ``session_secret``."""
        digest = hmac.new(self._key, session_secret.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def matches(self, session_secret: str, presented: str | None) -> bool:
        """Whether ``presented`` is the session's token (compared in constant time)."""
        if not presented:
            return False
        return hmac.compare_digest(self.for_session(session_secret), presented)


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How session cookies are set: lifetime and whether they need HTTPS."""

    secure: str = "auto"  # "auto": Secure when the request came over https

    def is_secure(self, scheme: str) -> bool:
        """Whether cookies set in answer to a request over ``scheme`` get ``Secure``."""
        if self.secure == "auto":
            return scheme == "https"
        return self.secure == "always"

    def set(
        self,
        response: Response,
        *,
        secret: str,
        csrf: str,
        expires_at: datetime,
        scheme: str,
        now: datetime,
    ) -> None:
        """Set the HttpOnly session cookie and the script-readable CSRF cookie."""
        max_age = max(0, int((expires_at - now).total_seconds()))
        secure = self.is_secure(scheme)
        response.set_cookie(
            SESSION_COOKIE, secret, max_age=max_age, path="/",
            secure=secure, httponly=True, samesite="strict",
        )  # fmt: skip
        response.set_cookie(
            CSRF_COOKIE, csrf, max_age=max_age, path="/",
            secure=secure, httponly=False, samesite="strict",
        )  # fmt: skip

    def clear(self, response: Response, *, scheme: str) -> None:
        """Expire both cookies."""
        secure = self.is_secure(scheme)
        for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
            response.delete_cookie(
                name, path="/", secure=secure, httponly=httponly, samesite="strict"
            )


class SessionCookieMiddleware:
    """Pure ASGI: a request without ``Authorization`` but with a session cookie is
    authenticated as that session; unsafe methods must present the CSRF token."""

    def __init__(self, app: ASGIApp, *, csrf: CsrfTokens) -> None:
        self.app = app
        self._csrf = csrf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NO_SESSION_PATHS:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        secret = _session_secret(headers)
        if secret is None or any(name == b"authorization" for name, _ in headers):
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS and not self._csrf.matches(
            secret, _header(headers, CSRF_HEADER.encode())
        ):
            await _csrf_refused(scope, receive, send)
            return
        bearer = (b"authorization", b"Bearer " + secret.encode())
        await self.app({**scope, "headers": [*headers, bearer]}, receive, send)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _session_secret(headers: list[tuple[bytes, bytes]]) -> str | None:
    raw = _header(headers, b"cookie")
    if raw is None:
        return None
    secret = cookie_parser(raw).get(SESSION_COOKIE)
    if secret is None or not _TOKEN.match(secret):
        return None
    return secret


async def _csrf_refused(scope: Scope, receive: Receive, send: Send) -> None:
    error = PermissionDeniedError(
        "This request needs the session's CSRF token in the X-CSRF-Token header "
        "(sign in again if it is lost).",
        code="csrf_failed",
    )
    response = Response(
        orjson.dumps(error.to_openai()), status_code=403, media_type="application/json"
    )
    await response(scope, receive, send)
