"""Routes changed at run time: stored, applied here, and applied by every other replica."""

from __future__ import annotations

import logging
from typing import Any

from atrium.bus import EventBus, RouteChanged, Subscription, replica_group
from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.core.http import parse_data
from atrium.core.settings import RouteSpec
from atrium.runtime.catalog import ModelCatalog
from atrium.store.routes import RouteRepository

log = logging.getLogger("atrium.gateway.routes")


class RouteAdmin:
    """Sets and removes routes without a restart, on every replica, through the bus.

    Each process listens in a consumer group of its own, so every replica sees
    every change; a replica that starts later reads the current routes from the
    store instead.
    """

    def __init__(self, catalog: ModelCatalog, routes: RouteRepository, bus: EventBus) -> None:
        self._catalog = catalog
        self._routes = routes
        self._bus = bus
        self._subscription: Subscription | None = None
        # One group per instance: every replica (even two in one process) hears every change.
        self._me = replica_group("routes")

    async def start(self) -> None:
        """Apply the stored routes, then follow changes.

        Not wrapped in ``once_per_event``: the event carries the whole spec, so applying it
        a second time sets the same route again."""
        for name, spec in (await self._routes.all()).items():
            self._apply_logged(name, spec)
        self._subscription = await self._bus.subscribe(RouteChanged, self._me, "c", self._on_change)

    async def close(self) -> None:
        """Stop following changes."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def put(self, name: str, body: dict[str, Any]) -> RouteSpec:
        """Validate, apply here, store, and tell the other replicas."""
        spec = parse_route(body)
        self._catalog.set_route(name, spec)
        stored = spec.model_dump(mode="json")
        await self._routes.put(name, stored)
        await self._bus.publish(RouteChanged(name=name, spec=stored))
        return spec

    async def delete(self, name: str) -> None:
        """Remove a route here, from the store and on the other replicas."""
        if not self._catalog.remove_route(name):
            raise NotFoundError(f"no route named {name!r}", param="name")
        await self._routes.delete(name)
        await self._bus.publish(RouteChanged(name=name, spec=None))

    async def _on_change(self, event: RouteChanged) -> None:
        if event.spec is None:
            self._catalog.remove_route(event.name)
        else:
            self._apply_logged(event.name, event.spec)

    def _apply_logged(self, name: str, spec: dict[str, Any]) -> None:
        # A route the store holds but this replica cannot serve (its models differ)
        # must not stop the replica: it is logged and skipped.
        try:
            self._catalog.set_route(name, parse_route(spec))
        except InvalidRequestError as exc:
            log.warning("route %r not applied: %s", name, exc.message)


def parse_route(body: dict[str, Any]) -> RouteSpec:
    """A route spec, or a 400 naming the bad field."""
    return parse_data(RouteSpec, body)
