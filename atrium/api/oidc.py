"""OpenID Connect sign-in routes (``/v1/auth/oidc/*``) and the public list of sign-in
providers the login page reads (``GET /v1/auth/providers``)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from atrium.core.errors import AtriumError, InvalidRequestError
from atrium.core.http import error_response, json_response
from atrium.users.oidc_flow import STATE_COOKIE, STATE_TTL_SECONDS, OidcSignIn
from atrium.users.sessions import CookiePolicy

_CALLBACK: Final = "/v1/auth/oidc/callback"
_ERROR_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in failed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto;
 line-height: 1.5; padding: 0 1rem">
<h1>Sign-in failed</h1><p>{message}</p><p><small>({code})</small></p>
<p><a href="/login">Back to the sign-in page</a></p></body></html>
"""


def providers_router(oidc: OidcSignIn | None) -> APIRouter:
    """``GET /v1/auth/providers``: which sign-in methods the login page offers (public)."""
    router = APIRouter(prefix="/v1/auth", tags=["auth"])

    @router.get("/providers")
    async def providers() -> Response:
        entry = None
        if oidc is not None:
            entry = {"name": oidc.options.name, "login_url": "/v1/auth/oidc/login"}
        return json_response({"object": "auth.providers", "password": True, "oidc": entry})

    return router


def oidc_router(oidc: OidcSignIn, cookies: CookiePolicy) -> APIRouter:
    """``GET /v1/auth/oidc/login`` (to the provider) and ``GET /v1/auth/oidc/callback``
    (back, signed in). Failures answer a readable page, or JSON to a JSON client."""
    router = APIRouter(prefix="/v1/auth/oidc", tags=["auth"])

    def redirect_uri(request: Request) -> str:
        configured = oidc.options.redirect_url
        return configured or str(request.base_url).rstrip("/") + _CALLBACK

    @router.get("/login")
    async def login(request: Request, next: str = "/") -> Response:
        try:
            out = await oidc.start(next, redirect_uri=redirect_uri(request))
        except AtriumError as error:
            return _failure(request, error)
        response = RedirectResponse(out.url, status_code=302)
        # Lax, not Strict: the provider's redirect back is a cross-site navigation.
        response.set_cookie(
            STATE_COOKIE, out.cookie, max_age=STATE_TTL_SECONDS, path=_CALLBACK,
            secure=cookies.is_secure(request.url.scheme), httponly=True, samesite="lax",
        )  # fmt: skip
        response.headers["cache-control"] = "no-store"
        return response

    @router.get("/callback")
    async def callback(request: Request) -> Response:
        query = request.query_params
        try:
            if "error" in query:
                reason = query.get("error_description") or query["error"]
                msg = f"the provider did not sign you in: {reason[:200]}"
                raise InvalidRequestError(msg, code="oidc_denied")
            signed, next_path = await oidc.finish(
                cookie=request.cookies.get(STATE_COOKIE),
                state=query.get("state"),
                code=query.get("code"),
                redirect_uri=redirect_uri(request),
                address=request.client.host if request.client is not None else "unknown",
                user_agent=request.headers.get("user-agent", ""),
            )
        except AtriumError as error:
            return _failure(request, error)
        response = RedirectResponse(next_path, status_code=303)
        cookies.set(
            response, secret=signed.secret, csrf=signed.csrf, expires_at=signed.expires_at,
            scheme=request.url.scheme, now=datetime.now(UTC),
        )  # fmt: skip
        _forget_state(response, request, cookies)
        return response

    return router


def _forget_state(response: Response, request: Request, cookies: CookiePolicy) -> None:
    response.delete_cookie(
        STATE_COOKIE, path=_CALLBACK, secure=cookies.is_secure(request.url.scheme),
        httponly=True, samesite="lax",
    )  # fmt: skip
    response.headers["cache-control"] = "no-store"


def _failure(request: Request, error: AtriumError) -> Response:
    """The error as OpenAI-shaped JSON to a JSON client, else as a short page."""
    if "application/json" in request.headers.get("accept", ""):
        response = error_response(error)
    else:
        page = _ERROR_PAGE.format(
            message=html.escape(error.message), code=html.escape(error.code or error.type)
        )
        response = HTMLResponse(page, status_code=error_response(error).status_code)
    response.headers["cache-control"] = "no-store"
    return response
