"""API key authentication on the hot path, with a short per-process cache."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from atrium.bus import Event, EventBus, KeyChanged, Subscription, TeamChanged, replica_group
from atrium.core.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from atrium.store.keys import ApiKey, ApiKeyRepository, Scope, hash_key

_MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified key."""

    key: ApiKey

    @property
    def key_id(self) -> str:
        """The key's id (safe to log; never the secret)."""
        return self.key.id

    def require(self, scope: Scope) -> None:
        """403 unless the key has ``scope``."""
        if scope not in self.key.scopes:
            msg = f"this API key lacks the {scope.value!r} scope"
            raise PermissionDeniedError(msg)


class KeyAuthenticator:
    """Turns an ``Authorization: Bearer`` header into a :class:`Principal`.

    Verified keys are cached by hash for ``ttl`` seconds so the store is not hit on
    every request; revoking through this process drops the entry at once. With a
    ``bus`` and ``publish`` (the ``EventPublisher``'s ``publish_urgent``, which never
    drops an event for lack of room and retries until the bus takes it), ``forget``
    also announces ``key.changed`` and every replica drops its copy when it hears it
    (each listens in a consumer group of its own, as route changes travel), so a key
    revoked anywhere is refused everywhere within the bus's delivery time rather than
    the cache's ``ttl``. ``forget_team`` does the same for every key of a team whose
    limits or budget changed (``team.changed``), as a cached key carries its team.
    """

    def __init__(
        self,
        keys: ApiKeyRepository,
        *,
        ttl: float,
        bus: EventBus | None = None,
        publish: Callable[[Event], bool] | None = None,
    ) -> None:
        self._keys = keys
        self._ttl = ttl
        self._bus = bus
        self._publish = publish
        self._subscriptions: list[Subscription] = []
        self._cache: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()

    async def start(self) -> None:
        """Follow other replicas' key and team changes (only with a bus and a cache).

        Not wrapped in ``once_per_event``: dropping a cached key a second time changes
        nothing."""
        if self._bus is not None and self._ttl > 0 and not self._subscriptions:
            group = replica_group("keys")  # one per topic's stream: a group of this replica
            self._subscriptions = [
                await self._bus.subscribe(KeyChanged, group, "c", self._on_change),
                await self._bus.subscribe(TeamChanged, group, "c", self._on_team_change),
            ]

    async def close(self) -> None:
        """Stop following changes (the bus then drops this replica's groups)."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller's principal, or 401 with the reason."""
        secret = _bearer(authorization)
        digest = hash_key(secret)
        key = self._cached(digest) or await self._load(secret, digest)
        return _active(key)

    async def principal_for(self, key_id: str) -> Principal:
        """The principal of a stored key by id (work done later on a caller's behalf, such
        as a workflow run); 401 when the key has since been revoked or has expired."""
        try:
            key = await self._keys.get(key_id)
        except NotFoundError:
            msg = "the API key this work runs as no longer exists"
            raise AuthenticationError(msg) from None
        return _active(key)

    async def require(self, authorization: str | None, scope: Scope) -> Principal:
        """The caller's principal if its key has ``scope``; 401 or 403 otherwise."""
        principal = await self.authenticate(authorization)
        principal.require(scope)
        return principal

    async def require_admin(self, authorization: str | None) -> Principal:
        """The caller's principal if its key has the ``admin`` scope; 401 or 403 otherwise."""
        return await self.require(authorization, Scope.ADMIN)

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (after a revoke or an update), here and on every replica."""
        self._drop(key_id)
        if self._publish is not None:
            self._publish(KeyChanged(key_id=key_id))

    def forget_team(self, team_id: str) -> None:
        """Drop every cached key of a team (after its limits or budget changed), here and
        on every replica."""
        self._drop_team(team_id)
        if self._publish is not None:
            self._publish(TeamChanged(team_id=team_id))

    async def _on_change(self, event: KeyChanged) -> None:
        self._drop(event.key_id)

    async def _on_team_change(self, event: TeamChanged) -> None:
        self._drop_team(event.team_id)

    def _drop(self, key_id: str) -> None:
        for digest in [d for d, (k, _) in self._cache.items() if k.id == key_id]:
            del self._cache[digest]

    def _drop_team(self, team_id: str) -> None:
        stale = [d for d, (k, _) in self._cache.items() if k.team and k.team.id == team_id]
        for digest in stale:
            del self._cache[digest]

    def _cached(self, digest: str) -> ApiKey | None:
        hit = self._cache.get(digest)
        if hit is None:
            return None
        key, until = hit
        if time.monotonic() >= until:
            del self._cache[digest]
            return None
        return key

    async def _load(self, secret: str, digest: str) -> ApiKey:
        key = await self._keys.find_by_secret(secret)
        if key is None:
            msg = "Incorrect API key provided."
            raise AuthenticationError(msg)
        if self._ttl > 0:
            self._cache[digest] = (key, time.monotonic() + self._ttl)
            if len(self._cache) > _MAX_CACHED:
                self._cache.popitem(last=False)
        return key


def _active(key: ApiKey) -> Principal:
    if key.revoked_at is not None:
        msg = "this API key has been revoked"
        raise AuthenticationError(msg, code="revoked_api_key")
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        msg = "this API key has expired"
        raise AuthenticationError(msg, code="expired_api_key")
    return Principal(key)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        msg = (
            "You didn't provide an API key. Send it in the Authorization header "
            "(Authorization: Bearer YOUR_KEY)."
        )
        raise AuthenticationError(msg, code="missing_api_key")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        msg = "The Authorization header must be 'Bearer YOUR_KEY'."
        raise AuthenticationError(msg)
    return secret.strip()


def authorize_model(principal: Principal, requested: str, canonical: str) -> None:
    """403 unless the key may use the model (by its canonical name or the alias asked)."""
    principal.require(Scope.INFERENCE)
    key = principal.key
    if key.allowed_models is None:
        return
    if requested in key.allowed_models or canonical in key.allowed_models:
        return
    msg = f"this API key is not allowed to use the model {requested!r}"
    raise PermissionDeniedError(msg, param="model", code="model_not_allowed")
