"""The model catalog: public names and aliases -> running backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from atrium.core.errors import InvalidRequestError, ModelNotFoundError
from atrium.core.settings import ModelSpec, RouteSpec
from atrium.runtime.base import Health, ModelBackend
from atrium.runtime.routing import Route, RoutingObserver, Target

BackendFactory = Callable[[str, ModelSpec], ModelBackend]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One served model."""

    name: str
    aliases: tuple[str, ...]
    backend: ModelBackend
    created: int


class ModelCatalog:
    """Resolves a requested model name (or alias) to its backend."""

    def __init__(
        self, entries: list[CatalogEntry], *, observer: RoutingObserver | None = None
    ) -> None:
        self._observer = observer
        self._entries: dict[str, CatalogEntry] = {}
        self._by_public: dict[str, CatalogEntry] = {}
        self._routes: set[str] = set()
        for entry in entries:
            self._add(entry, routed=False)

    @classmethod
    def from_settings(
        cls,
        models: Mapping[str, ModelSpec],
        factories: Mapping[str, BackendFactory],
        routes: Mapping[str, RouteSpec] | None = None,
        observer: RoutingObserver | None = None,
    ) -> ModelCatalog:
        """Build a backend for each configured model, then the routes over them."""
        now = int(time.time())
        entries = [
            CatalogEntry(name, tuple(spec.aliases), factories[spec.backend](name, spec), now)
            for name, spec in models.items()
        ]
        catalog = cls(entries, observer=observer)
        for name, spec in (routes or {}).items():
            catalog.set_route(name, spec)
        return catalog

    def set_route(self, name: str, spec: RouteSpec) -> None:
        """Add or replace a route, live; 400 naming the field when the spec cannot work."""
        self._check_route(name, spec)
        route = Route(
            name,
            spec,
            [self._target(t.model, t.weight) for t in spec.targets],
            [self._target(f) for f in spec.fallbacks],
            observer=self._observer,
        )
        self.remove_route(name)
        self._add(CatalogEntry(name, tuple(spec.aliases), route, int(time.time())), routed=True)

    def remove_route(self, name: str) -> bool:
        """Drop a route (models stay); False when there was none."""
        if name not in self._routes:
            return False
        entry = self._entries.pop(name)
        self._routes.discard(name)
        for public in (entry.name, *entry.aliases):
            self._by_public.pop(public, None)
        return True

    def add_model(self, name: str, backend: ModelBackend, aliases: tuple[str, ...] = ()) -> None:
        """Serve a running backend under a name, live (a deployment); 400 if a name is taken."""
        for field, public in (("name", name), *(("aliases", a) for a in aliases)):
            if public in self._by_public:
                msg = f"{public!r} is already the name of {self._by_public[public].name!r}"
                raise InvalidRequestError(msg, param=field)
        self._add(CatalogEntry(name, aliases, backend, int(time.time())), routed=False)

    def remove_model(self, name: str) -> CatalogEntry | None:
        """Stop serving a model added live (the caller closes its backend); None if absent."""
        if name in self._routes or name not in self._entries:
            return None
        entry = self._entries.pop(name)
        for public in (entry.name, *entry.aliases):
            self._by_public.pop(public, None)
        return entry

    def _check_route(self, name: str, spec: RouteSpec) -> None:
        for field, public in (("name", name), *(("aliases", a) for a in spec.aliases)):
            owner = self._by_public.get(public)
            if owner is not None and owner.name != name:
                msg = f"{public!r} is already the name of {owner.name!r}"
                raise InvalidRequestError(msg, param=field)
            if public in self._entries and public not in self._routes:
                raise InvalidRequestError(f"{public!r} is a model, not a route", param=field)
        named = [("targets", t.model) for t in spec.targets]
        named += [("fallbacks", f) for f in spec.fallbacks]
        for field, model in named:
            entry = self._by_public.get(model)
            if entry is None or entry.name in self._routes:
                msg = f"{model!r} is not a configured model (routes point at models)"
                raise InvalidRequestError(msg, param=field)

    def _target(self, public: str, weight: float = 1.0) -> Target:
        entry = self.resolve(public)
        return Target(entry.name, entry.backend, weight)

    def _add(self, entry: CatalogEntry, *, routed: bool) -> None:
        self._entries[entry.name] = entry
        self._routes.update({entry.name} if routed else set())
        for public in (entry.name, *entry.aliases):
            self._by_public[public] = entry

    def resolve(self, public: str) -> CatalogEntry:
        """The entry for a name or alias, or 404 ``model_not_found``."""
        entry = self._by_public.get(public)
        if entry is None:
            msg = f"the model {public!r} does not exist"
            raise ModelNotFoundError(msg, param="model")
        return entry

    def names(self) -> list[str]:
        """Every public name, canonical names first, then aliases."""
        canonical = list(self._entries)
        return canonical + [p for p in self._by_public if p not in self._entries]

    def entries(self) -> list[CatalogEntry]:
        """Every served model."""
        return list(self._entries.values())

    def _deployments(self) -> list[CatalogEntry]:
        """Entries that own resources (routes only point at them)."""
        return [e for n, e in self._entries.items() if n not in self._routes]

    async def start(self) -> None:
        """Start every backend concurrently."""
        await asyncio.gather(*(e.backend.start() for e in self._deployments()))

    async def close(self) -> None:
        """Close every backend."""
        await asyncio.gather(*(e.backend.close() for e in self._deployments()))

    async def health(self) -> dict[str, Health]:
        """Each model's readiness."""
        names = list(self._entries)
        results = await asyncio.gather(*(self._entries[n].backend.health() for n in names))
        return dict(zip(names, results, strict=True))
