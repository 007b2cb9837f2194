"""``/v1/registry/models``: models, versions, aliases, tags, lineage.

Reading needs the ``inference`` scope; every change needs ``admin``. Registering a
version copies the model file into the model store before answering.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response

from atrium.core.errors import InvalidRequestError
from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.registry.public import (
    alias_public,
    lineage_public,
    model_public,
    model_view_public,
    version_public,
    version_view_public,
)
from atrium.registry.service import RegistryService
from atrium.registry.types import (
    ALIAS_PATTERN,
    AliasSet,
    LineageCreate,
    ModelCreate,
    TagsUpdate,
    VersionCreate,
)
from atrium.store.keys import Scope

PREFIX = "/v1/registry/models"
_ALIAS = re.compile(ALIAS_PATTERN)
_Check = Callable[[Request], Awaitable[None]]


def _alias(name: str) -> str:
    if not _ALIAS.match(name):
        msg = f"invalid alias {name!r}: a letter, then letters, digits, '.', '_' or '-'"
        raise InvalidRequestError(msg, param="alias")
    return name


def registry_router(service: RegistryService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/registry/models``."""
    router = APIRouter(prefix=PREFIX, tags=["model registry"])

    async def admin(request: Request) -> None:
        await auth.require_admin(request.headers.get("authorization"))

    async def reader(request: Request) -> None:
        await auth.require(request.headers.get("authorization"), Scope.INFERENCE)

    @router.post("")
    async def create(request: Request) -> Response:
        await admin(request)
        body = parse_body(ModelCreate, await request.body())
        return json_response(model_public(await service.create_model(body)), status=201)

    @router.get("")
    async def list_all(request: Request) -> Response:
        await reader(request)
        data = [model_public(m) for m in await service.list_models()]
        return json_response({"object": "list", "data": data})

    @router.get("/{model}")
    async def describe(model: str, request: Request) -> Response:
        await reader(request)
        return json_response(model_view_public(await service.describe_model(model)))

    @router.post("/{model}/versions")
    async def register(model: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(VersionCreate, await request.body())
        version = await service.register_version(model, body)
        return json_response(version_public(version), status=201)

    @router.get("/{model}/versions")
    async def versions(model: str, request: Request) -> Response:
        await reader(request)
        data = [version_public(v) for v in await service.versions(model)]
        return json_response({"object": "list", "data": data})

    @router.get("/{model}/versions/{version}")
    async def describe_version(model: str, version: int, request: Request) -> Response:
        await reader(request)
        return json_response(version_view_public(await service.describe_version(model, version)))

    @router.post("/{model}/versions/{version}/archive")
    async def archive(model: str, version: int, request: Request) -> Response:
        await admin(request)
        return json_response(version_public(await service.archive(model, version)))

    @router.post("/{model}/versions/{version}/tags")
    async def tags(model: str, version: int, request: Request) -> Response:
        await admin(request)
        body = parse_body(TagsUpdate, await request.body())
        return json_response(version_public(await service.update_tags(model, version, body)))

    @router.post("/{model}/versions/{version}/lineage")
    async def add_lineage(model: str, version: int, request: Request) -> Response:
        await admin(request)
        body = parse_body(LineageCreate, await request.body())
        record = await service.add_lineage(model, version, body)
        return json_response(lineage_public(record), status=201)

    _alias_routes(router, service, admin, reader)
    return router


def _alias_routes(
    router: APIRouter,
    service: RegistryService,
    admin: _Check,
    reader: _Check,
) -> None:
    @router.get("/{model}/aliases/{alias}")
    async def resolve(model: str, alias: str, request: Request) -> Response:
        await reader(request)
        return json_response(version_public(await service.resolve(model, _alias(alias))))

    @router.put("/{model}/aliases/{alias}")
    async def set_alias(model: str, alias: str, request: Request) -> Response:
        await admin(request)
        body = parse_body(AliasSet, await request.body())
        return json_response(alias_public(await service.set_alias(model, _alias(alias), body)))

    @router.delete("/{model}/aliases/{alias}")
    async def delete_alias(model: str, alias: str, request: Request) -> Response:
        await admin(request)
        await service.delete_alias(model, _alias(alias))
        return json_response({"object": "registry.alias", "alias": alias, "deleted": True})
