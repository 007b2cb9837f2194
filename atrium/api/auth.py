"""Sign-in for the web UI (``/v1/auth``) and the admin API for users (``/v1/admin/users``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Self

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.core.http import json_response, parse_body, parse_data
from atrium.gateway.auth import KeyAuthenticator
from atrium.users.repository import Role, User
from atrium.users.service import UserChanges, UserService
from atrium.users.sessions import CookiePolicy


class LoginBody(BaseModel):
    """Body of ``POST /v1/auth/login``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class UserCreate(BaseModel):
    """Body of ``POST /v1/admin/users``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)
    role: Role = Role.USER
    display_name: str = Field("", max_length=200)


class UserUpdate(BaseModel):
    """Body of ``PATCH /v1/admin/users/{id}``; absent fields stay as they are."""

    model_config = ConfigDict(strict=True, extra="forbid")

    role: Role | None = None
    disabled: bool | None = None
    display_name: str | None = Field(None, max_length=200)
    password: str | None = Field(None, min_length=1, max_length=1024)


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def auth_router(users: UserService, auth: KeyAuthenticator, cookies: CookiePolicy) -> APIRouter:
    """``POST /v1/auth/login``, ``POST /v1/auth/logout`` and ``GET /v1/auth/me``."""
    router = APIRouter(prefix="/v1/auth", tags=["auth"])

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = parse_body(LoginBody, await request.body())
        signed = await users.sign_in(
            body.username,
            body.password,
            address=_address(request),
            user_agent=request.headers.get("user-agent", ""),
        )
        answer = {
            "user": signed.user.to_public(),
            "csrf_token": signed.csrf,
            "expires_at": signed.expires_at.isoformat(),
        }
        response = json_response(answer)
        cookies.set(
            response, secret=signed.secret, csrf=signed.csrf, expires_at=signed.expires_at,
            scheme=request.url.scheme, now=datetime.now(UTC),
        )  # fmt: skip
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        await users.sign_out(principal)
        response = json_response({"object": "logout", "ok": True})
        cookies.clear(response, scheme=request.url.scheme)
        return response

    @router.get("/me")
    async def me(request: Request) -> Response:
        principal = await auth.authenticate(request.headers.get("authorization"))
        user = await users.user_of(principal)
        expires = principal.key.expires_at
        return json_response(
            {**user.to_public(), "session_expires_at": expires.isoformat() if expires else None}
        )

    return router


class IdentityQuery(BaseModel):
    """Query of ``DELETE /v1/admin/users/{id}/identities``: one identity by its issuer and
    subject, or neither for all of the user's identities."""

    model_config = ConfigDict(extra="forbid")

    issuer: str | None = Field(None, min_length=1, max_length=500)
    subject: str | None = Field(None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.issuer is None) != (self.subject is None):
            msg = "give both issuer and subject to unbind one identity, or neither to unbind all"
            raise ValueError(msg)
        return self


def users_router(users: UserService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/admin/users``: list, create, change role, disable, unbind from an OpenID Connect
    subject; admin scope required."""
    router = APIRouter(prefix="/v1/admin/users", tags=["admin"])

    async def admin(request: Request) -> User | None:
        principal = await auth.require_admin(request.headers.get("authorization"))
        return await users.users.session_user(principal.key_id)

    @router.get("")
    async def list_users(request: Request) -> Response:
        await admin(request)
        data = [u.to_public() for u in await users.users.list()]
        return json_response({"object": "list", "data": data})

    @router.post("")
    async def create_user(request: Request) -> Response:
        by = await admin(request)
        body = parse_body(UserCreate, await request.body())
        user = await users.create_user(**body.model_dump(), by=by)
        return json_response(user.to_public(), status=201)

    @router.get("/{user_id}")
    async def get_user(user_id: str, request: Request) -> Response:
        await admin(request)
        return json_response((await users.users.get(user_id)).to_public())

    @router.patch("/{user_id}")
    async def update_user(user_id: str, request: Request) -> Response:
        by = await admin(request)
        body = parse_body(UserUpdate, await request.body())
        changed = await users.update_user(user_id, UserChanges(**body.model_dump()), by=by)
        return json_response(changed.to_public())

    @router.get("/{user_id}/identities")
    async def identities(user_id: str, request: Request) -> Response:
        await admin(request)
        await users.users.get(user_id)
        data = await users.users.identities(user_id)
        return json_response({"object": "list", "data": data})

    @router.delete("/{user_id}/identities")
    async def unbind(user_id: str, request: Request) -> Response:
        # The way back when a provider reissued an account: the next sign-in binds anew.
        await admin(request)
        query = parse_data(IdentityQuery, dict(request.query_params))
        await users.users.get(user_id)
        if query.issuer is None or query.subject is None:
            count = await users.users.unbind_identities(user_id)
        else:
            # The subject too, not the issuer alone: a page showing an identity that has
            # since been bound anew does not unbind the new one.
            await users.users.unbind_identity(user_id, query.issuer, query.subject)
            count = 1
        return json_response({"object": "user.identities", "user_id": user_id, "deleted": count})

    return router
