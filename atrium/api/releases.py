"""``/v1/deployments`` and ``/v1/releases``: model replicas, and the release pipeline.

Reading needs the ``inference`` scope; every change needs ``admin``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from atrium.core.http import json_response, parse_body
from atrium.gateway.auth import KeyAuthenticator
from atrium.releases.deployments import DeploymentCreate, DeploymentService, ScaleRequest
from atrium.releases.experiments import (
    ExperimentCreate,
    ExperimentService,
    ExperimentStop,
    FeedbackCreate,
    RatingCreate,
    experiment_public,
)
from atrium.releases.service import ReleaseCreate, ReleaseService, release_public
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers.base import Deployment
from atrium.store.keys import Scope


def deployment_public(deployment: Deployment) -> dict[str, Any]:
    """A deployment as the API shows it."""
    spec = deployment.spec
    return {
        "object": "deployment",
        "name": deployment.name,
        "model": spec.model.name,
        "version": spec.model.version,
        "runtime": spec.runtime,
        "desired": deployment.desired,
        "ready": deployment.ready,
        "replicas": [r.model_dump(mode="json") for r in deployment.replicas],
        "bounds": spec.replicas.model_dump(),
        "allocation": deployment.allocation.model_dump(mode="json"),
        "autoscaling": spec.autoscaling.model_dump(),
    }


class _Access:
    def __init__(self, auth: KeyAuthenticator) -> None:
        self._auth = auth

    async def admin(self, request: Request) -> None:
        await self._auth.require_admin(request.headers.get("authorization"))

    async def reader(self, request: Request) -> None:
        await self._auth.require(request.headers.get("authorization"), Scope.INFERENCE)


def deployments_router(service: DeploymentService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/deployments``: create, list, show, scale, delete."""
    router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
    access = _Access(auth)

    @router.post("")
    async def create(request: Request) -> Response:
        await access.admin(request)
        body = parse_body(DeploymentCreate, await request.body())
        return json_response(deployment_public(await service.create(body)), status=201)

    @router.get("")
    async def list_all(request: Request) -> Response:
        await access.reader(request)
        data = [deployment_public(d) for d in await service.list()]
        return json_response({"object": "list", "data": data})

    @router.get("/{name}")
    async def show(name: str, request: Request) -> Response:
        await access.reader(request)
        return json_response(deployment_public(await service.status(name)))

    @router.post("/{name}/scale")
    async def scale(name: str, request: Request) -> Response:
        await access.admin(request)
        body = parse_body(ScaleRequest, await request.body())
        return json_response(deployment_public(await service.scale(name, body.replicas)))

    @router.delete("/{name}")
    async def delete(name: str, request: Request) -> Response:
        await access.admin(request)
        await service.delete(name)
        return json_response({"name": name, "deleted": True})

    return router


def releases_router(service: ReleaseService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/releases``: start by hand, list, show, and steer a running release."""
    router = APIRouter(prefix="/v1/releases", tags=["releases"])
    access = _Access(auth)

    @router.post("")
    async def create(request: Request) -> Response:
        await access.admin(request)
        body = parse_body(ReleaseCreate, await request.body())
        return json_response(release_public(await service.create(body)), status=201)

    @router.get("")
    async def list_all(
        request: Request,
        model: str | None = Query(None, max_length=100),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        await access.reader(request)
        data = [release_public(r) for r in await service.list(model, limit)]
        return json_response({"object": "list", "data": data})

    @router.get("/{release_id}")
    async def show(release_id: str, request: Request) -> Response:
        await access.reader(request)
        return json_response(release_public(await service.get(release_id)))

    @router.post("/{release_id}/{action}")
    async def control(release_id: str, action: str, request: Request) -> Response:
        await access.admin(request)
        release = await service.control(release_id, action)
        return json_response({**release_public(release), "requested": action}, status=202)

    return router


def experiments_router(service: ExperimentService, auth: KeyAuthenticator) -> APIRouter:
    """``/v1/experiments``: A/B splits, their live numbers and verdicts, user feedback."""
    router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
    access = _Access(auth)

    @router.post("")
    async def create(request: Request) -> Response:
        await access.admin(request)
        body = parse_body(ExperimentCreate, await request.body())
        return json_response(experiment_public(await service.create(body)), status=201)

    @router.get("")
    async def list_all(request: Request) -> Response:
        await access.reader(request)
        data = [experiment_public(e) for e in await service.list()]
        return json_response({"object": "list", "data": data})

    @router.get("/{name}")
    async def show(name: str, request: Request) -> Response:
        await access.reader(request)
        return json_response(experiment_public(*await service.results(name)))

    @router.post("/{name}/feedback")
    async def feedback(name: str, request: Request) -> Response:
        await access.reader(request)
        body = parse_body(FeedbackCreate, await request.body())
        arm = await service.feedback(name, body)
        return json_response({"experiment": name, "arm": arm, "rating": body.rating}, status=202)

    @router.post("/{name}/stop")
    async def stop(name: str, request: Request) -> Response:
        await access.admin(request)
        body = parse_body(ExperimentStop, await request.body() or b"{}")
        return json_response(experiment_public(await service.stop(name, body)))

    return router


def feedback_router(
    service: ExperimentService, catalog: ModelCatalog, auth: KeyAuthenticator
) -> APIRouter:
    """``POST /v1/feedback``: thumbs up or down for the model (or route arm) that answered."""
    router = APIRouter(tags=["experiments"])
    access = _Access(auth)

    @router.post("/v1/feedback")
    async def rate(request: Request) -> Response:
        await access.reader(request)
        body = parse_body(RatingCreate, await request.body())
        target = service.rate(body, lambda name: catalog.resolve(name).name)
        return json_response({"model": target, "rating": body.rating}, status=202)

    return router
