"""API keys: the record, how secrets are made and hashed, and the repository."""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Row, Select, func, select, update

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import ApiKeyRow, TeamRow
from atrium.store.teams import Team, check_budget, team_from_row

DISPLAY_PREFIX_LENGTH: Final = 12
MIN_SECRET_LENGTH: Final = 20
MAX_NAME_LENGTH: Final = 200


class Scope(StrEnum):
    """What a key may do: call models, or also administer the platform."""

    INFERENCE = "inference"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """An API key as the rest of Atrium sees it; it never carries the secret or its hash."""

    id: str
    name: str
    owner: str
    display_prefix: str
    scopes: frozenset[Scope]
    allowed_models: frozenset[str] | None
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    max_parallel: int | None = None
    team: Team | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    access_groups: frozenset[str] = frozenset()
    #: Response cache: True caches its deterministic requests by default, False never
    #: caches them (a request cannot opt back in), None follows ``cache.by_default``.
    cache: bool | None = None

    def is_active(self, now: datetime) -> bool:
        """Whether the key may be used at ``now`` (timezone-aware): not revoked, not expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def allows_model(self, name: str) -> bool:
        """Whether the key may call the model ``name``; keys without a list may call any."""
        return self.allowed_models is None or name in self.allowed_models

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view for the admin API."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "display_prefix": self.display_prefix,
            "scopes": sorted(self.scopes),
            "allowed_models": None if self.allowed_models is None else sorted(self.allowed_models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "access_groups": sorted(self.access_groups),
            "cache": self.cache,
            "team": None if self.team is None else {"id": self.team.id, "name": self.team.name},
            "expires_at": _isoformat(self.expires_at),
            "revoked_at": _isoformat(self.revoked_at),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class NewKey:
    """A key just created: its record and the plaintext secret, shown to the caller once."""

    record: ApiKey
    # Kept out of repr so that logging a NewKey does not leak the secret.
    secret: str = field(repr=False)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up."""
    # A fast, unsalted hash is right here: generated keys carry 256 random bits,
    # so there is nothing to brute-force, unlike a password. Being deterministic,
    # it also lets each request find its key by an indexed equality lookup.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret(prefix: str) -> str:
    """A new secret: ``prefix`` followed by 256 random bits, URL-safe base64."""
    return prefix + secrets.token_urlsafe(32)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKeyRepository:
    """Creates, finds, lists and revokes API keys in the relational store.

    ``clock`` returns the current timezone-aware time; tests pass their own.
    """

    def __init__(
        self,
        db: Database,
        *,
        prefix: str = "atr-",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = db
        self._prefix = prefix
        self._clock = clock

    async def create(
        self,
        *,
        name: str,
        owner: str = "",
        scopes: Iterable[Scope] = frozenset({Scope.INFERENCE}),
        allowed_models: Iterable[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_at: datetime | None = None,
        secret: str | None = None,
        max_parallel: int | None = None,
        team: Team | None = None,
        budget_usd: float | None = None,
        budget_period: str | None = None,
        access_groups: Iterable[str] = (),
        cache: bool | None = None,
    ) -> NewKey:
        """Create a key; with ``secret``, import that known key instead of generating one.

        Raises :class:`InvalidRequestError` (with ``param`` set) for bad input or a
        secret that is already stored; nothing is written then.
        """
        now = self._clock().astimezone(UTC)
        _check_text("name", name, required=True)
        _check_text("owner", owner, required=False)
        scope_set = _check_scopes(scopes)
        models = _check_models(allowed_models)
        _check_limit("rpm", rpm)
        _check_limit("tpm", tpm)
        _check_limit("max_parallel", max_parallel)
        check_budget(budget_usd, budget_period)
        groups = _check_groups(access_groups)
        expires_at = _check_expiry(expires_at, now)
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            msg = f"an imported key must be at least {MIN_SECRET_LENGTH} characters"
            raise InvalidRequestError(msg, param="secret")
        secret = secret if secret is not None else generate_secret(self._prefix)
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            name=name,
            owner=owner,
            display_prefix=secret[:DISPLAY_PREFIX_LENGTH],
            key_hash=hash_key(secret),
            scopes=sorted(scope_set),
            allowed_models=None if models is None else sorted(models),
            rpm=rpm,
            tpm=tpm,
            max_parallel=max_parallel,
            budget_usd=budget_usd,
            budget_period=budget_period,
            access_groups=sorted(groups) or None,
            team_id=None if team is None else team.id,
            cache=cache,
            expires_at=expires_at,
            revoked_at=None,
            created_at=now,
        )
        await self._insert(row)
        return NewKey(record=_to_record(row, team), secret=secret)

    async def find_by_secret(self, secret: str) -> ApiKey | None:
        """The key with this secret, revoked or expired ones included; None if unknown.

        Callers decide with :meth:`ApiKey.is_active`. The lookup compares hashes,
        so its timing reveals nothing about the secrets stored.
        """
        query = _with_team().where(ApiKeyRow.key_hash == hash_key(secret))
        async with self._db.session() as session:
            found = (await session.execute(query)).first()
        return None if found is None else _joined(found)

    async def get(self, key_id: str) -> ApiKey:
        """The key with this id; :class:`NotFoundError` when there is none."""
        async with self._db.session() as session:
            found = (await session.execute(_with_team().where(ApiKeyRow.id == key_id))).first()
        if found is None:
            raise _not_found(key_id)
        return _joined(found)

    async def list(self, *, include_revoked: bool = True) -> builtins.list[ApiKey]:
        """Every key, oldest first."""
        query = _with_team().order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self._db.session() as session:
            rows = await session.execute(query)
            return [_joined(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key; revoking it again keeps the first revocation time."""
        # One conditional UPDATE, so two concurrent revokes cannot both set the time.
        statement = (
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=self._clock())
        )
        async with self._db.session() as session:
            await session.execute(statement)
            await session.commit()
        return await self.get(key_id)

    async def set_cache(self, key_id: str, cache: bool | None) -> ApiKey:
        """Set the key's response-cache choice (None: follow the setting)."""
        return await self._set(key_id, cache=cache)

    async def set_team(self, key_id: str, team: Team | None) -> ApiKey:
        """Move the key into ``team``, or out of any team with None."""
        return await self._set(key_id, team_id=None if team is None else team.id)

    async def _set(self, key_id: str, **values: Any) -> ApiKey:
        statement = update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(**values)
        async with self._db.session() as session:
            result = await session.execute(statement)
            await session.commit()
        if not getattr(result, "rowcount", 0):
            raise _not_found(key_id)
        return await self.get(key_id)

    async def count(self) -> int:
        """How many keys exist, revoked ones included."""
        async with self._db.session() as session:
            total = await session.scalar(select(func.count()).select_from(ApiKeyRow))
        return int(total or 0)

    async def _insert(self, row: ApiKeyRow) -> None:
        msg = "a key with this secret already exists"
        await self._db.insert(row, InvalidRequestError(msg, param="secret"))


def _with_team() -> Select[ApiKeyRow, TeamRow]:
    """Keys with their team's row (or None), in one query."""
    return select(ApiKeyRow, TeamRow).outerjoin(TeamRow, ApiKeyRow.team_id == TeamRow.id)


def _joined(row: Row[ApiKeyRow, TeamRow]) -> ApiKey:
    key, team = row  # an outer join: team is None for keys without one
    return _to_record(key, None if team is None else team_from_row(team))


def _to_record(row: ApiKeyRow, team: Team | None = None) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        owner=row.owner,
        display_prefix=row.display_prefix,
        scopes=frozenset(Scope(scope) for scope in row.scopes),
        allowed_models=None if row.allowed_models is None else frozenset(row.allowed_models),
        rpm=row.rpm,
        tpm=row.tpm,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
        max_parallel=row.max_parallel,
        team=team,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
        access_groups=frozenset(row.access_groups or ()),
        cache=row.cache,
    )


def _isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _not_found(key_id: str) -> NotFoundError:
    return NotFoundError(f"no API key with id {key_id!r}", param="key_id")


def _check_text(param: str, value: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidRequestError(f"{param} must not be empty", param=param)
    if len(value) > MAX_NAME_LENGTH:
        msg = f"{param} must be at most {MAX_NAME_LENGTH} characters"
        raise InvalidRequestError(msg, param=param)


def _check_scopes(scopes: Iterable[Scope]) -> frozenset[Scope]:
    try:
        checked = frozenset(Scope(scope) for scope in scopes)
    except ValueError as exc:
        allowed = ", ".join(Scope)
        raise InvalidRequestError(f"scopes must be among: {allowed}", param="scopes") from exc
    if not checked:
        raise InvalidRequestError("a key needs at least one scope", param="scopes")
    return checked


def _check_models(models: Iterable[str] | None) -> frozenset[str] | None:
    if models is None:
        return None
    checked = frozenset(models)
    if any(not isinstance(model, str) or not model for model in checked):
        raise InvalidRequestError("model names must be non-empty", param="allowed_models")
    return checked


def _check_limit(param: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InvalidRequestError(f"{param} must be at least 1", param=param)


def _check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.utcoffset() is None:
        msg = "expires_at must carry a timezone"
        raise InvalidRequestError(msg, param="expires_at")
    if expires_at <= now:
        raise InvalidRequestError("expires_at must be in the future", param="expires_at")
    return expires_at.astimezone(UTC)


_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


def _check_groups(groups: Iterable[str]) -> frozenset[str]:
    """Access groups for knowledge-base documents; each a short identifier."""
    checked = frozenset(groups)
    for group in checked:
        if not isinstance(group, str) or not _GROUP.match(group):
            msg = f"access group {group!r} must match {_GROUP.pattern}"
            raise InvalidRequestError(msg, param="access_groups")
    return checked
