"""Users and their sessions in the relational store."""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import delete, func, select, update

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.keys import Scope
from atrium.store.users import UserIdentityRow, UserRow, UserSessionRow

_USERNAME: Final = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,99}$")
MAX_DISPLAY_NAME: Final = 200


class Role(StrEnum):
    """What a user may do: administer, build workflows, or use chat and workflows."""

    ADMIN = "admin"
    BUILDER = "builder"
    USER = "user"


# The API key scopes a session of each role carries.
ROLE_SCOPES: Final[dict[Role, frozenset[Scope]]] = {
    Role.ADMIN: frozenset({Scope.ADMIN, Scope.INFERENCE}),
    Role.BUILDER: frozenset({Scope.INFERENCE}),
    Role.USER: frozenset({Scope.INFERENCE}),
}


@dataclass(frozen=True, slots=True)
class User:
    """A user as the rest of Atrium sees it; never the password hash."""

    id: str
    username: str
    display_name: str
    role: Role
    disabled_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def scopes(self) -> frozenset[Scope]:
        """The scopes of this user's sessions."""
        return ROLE_SCOPES[self.role]

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view for the API."""
        return {
            "object": "user",
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role.value,
            "scopes": sorted(self.scopes),
            "disabled": self.disabled_at is not None,
            "disabled_at": _iso(self.disabled_at),
            "last_login_at": _iso(self.last_login_at),
            "created_at": self.created_at.isoformat(),
        }


def normalize_username(username: str) -> str:
    """The stored form of a username (lower case); 400 unless it is a sane identifier."""
    name = username.strip().lower()
    if not _USERNAME.match(name):
        msg = (
            "username must be 1-100 characters: letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
        raise InvalidRequestError(msg, param="username")
    return name


def check_display_name(name: str) -> str:
    """A display name, trimmed; 400 when too long."""
    if len(name) > MAX_DISPLAY_NAME:
        msg = f"display_name must be at most {MAX_DISPLAY_NAME} characters"
        raise InvalidRequestError(msg, param="display_name")
    return name.strip()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserRepository:
    """Creates, finds and updates users, and records their sessions."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, *, username: str, password_hash: str, role: Role, display_name: str = ""
    ) -> User:
        """A new user; 409 when the username is taken."""
        now = self._clock()
        row = UserRow(
            id=uuid.uuid4().hex,
            username=normalize_username(username),
            display_name=check_display_name(display_name),
            password_hash=password_hash,
            role=Role(role).value,
            disabled_at=None,
            last_login_at=None,
            created_at=now,
            updated_at=now,
        )
        msg = f"the username {row.username!r} is taken"
        await self._db.insert(row, ConflictError(msg, param="username", code="username_taken"))
        return _user(row)

    async def credentials(self, username: str) -> tuple[User, str] | None:
        """The user and password hash for a login name; None when there is no such user."""
        name = username.strip().lower()
        async with self._db.session() as session:
            row = await session.scalar(select(UserRow).where(UserRow.username == name))
        return None if row is None else (_user(row), row.password_hash)

    async def get(self, user_id: str) -> User:
        """The user with this id; 404 when there is none."""
        async with self._db.session() as session:
            row = await session.get(UserRow, user_id)
        if row is None:
            raise NotFoundError(f"no user with id {user_id!r}", param="user_id")
        return _user(row)

    async def list(self) -> builtins.list[User]:
        """Every user, oldest first."""
        query = select(UserRow).order_by(UserRow.created_at, UserRow.id)
        async with self._db.session() as session:
            return [_user(row) for row in await session.scalars(query)]

    async def count(self) -> int:
        """How many users exist, disabled ones included."""
        async with self._db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(UserRow)) or 0)

    async def update(self, user_id: str, **values: Any) -> User:
        """Set columns of a user (``role``, ``disabled_at``, ``password_hash`` ...)."""
        values["updated_at"] = self._clock()
        async with self._db.session() as session:
            await session.execute(update(UserRow).where(UserRow.id == user_id).values(**values))
            await session.commit()
        return await self.get(user_id)

    async def by_identity(self, issuer: str, subject: str) -> User | None:
        """The user bound to ``subject`` at the identity provider ``issuer``, if any."""
        query = (
            select(UserRow)
            .join(UserIdentityRow, UserIdentityRow.user_id == UserRow.id)
            .where(UserIdentityRow.issuer == issuer, UserIdentityRow.subject == subject)
        )
        async with self._db.session() as session:
            row = await session.scalar(query)
        return None if row is None else _user(row)

    async def identity_subject(self, user_id: str, issuer: str) -> str | None:
        """The subject ``user_id`` is bound to at ``issuer``; None when unbound there."""
        query = select(UserIdentityRow.subject).where(
            UserIdentityRow.user_id == user_id, UserIdentityRow.issuer == issuer
        )
        async with self._db.session() as session:
            subject: str | None = await session.scalar(query)
        return subject

    async def bind_identity(self, user_id: str, issuer: str, subject: str) -> None:
        """Bind ``user_id`` to ``subject`` at ``issuer``; 409 when the subject is another
        user's or the user is already bound to another subject there."""
        row = UserIdentityRow(
            issuer=issuer, subject=subject, user_id=user_id, created_at=self._clock()
        )
        msg = f"the identity {subject!r} of {issuer!r} or this user is bound already"
        await self._db.insert(row, ConflictError(msg, code="identity_bound"))

    async def identities(self, user_id: str) -> builtins.list[dict[str, str]]:
        """The provider subjects ``user_id`` is bound to, oldest first (JSON-safe)."""
        query = (
            select(UserIdentityRow)
            .where(UserIdentityRow.user_id == user_id)
            .order_by(UserIdentityRow.created_at, UserIdentityRow.issuer)
        )
        async with self._db.session() as session:
            rows = await session.scalars(query)
            return [
                {"issuer": r.issuer, "subject": r.subject, "created_at": r.created_at.isoformat()}
                for r in rows
            ]

    async def unbind_identities(self, user_id: str) -> int:
        """Forget every subject ``user_id`` is bound to (the next sign-in binds again, by
        e-mail); how many there were."""
        mine = UserIdentityRow.user_id == user_id
        async with self._db.session() as session:
            count = select(func.count()).select_from(UserIdentityRow).where(mine)
            bound = int(await session.scalar(count) or 0)
            if bound:
                await session.execute(delete(UserIdentityRow).where(mine))
                await session.commit()
        return bound

    async def unbind_identity(self, user_id: str, issuer: str, subject: str) -> None:
        """Forget the one subject ``user_id`` is bound to at ``issuer`` (the next sign-in
        there binds again, by e-mail); 404 when the user is not bound to that subject."""
        mine = (
            UserIdentityRow.user_id == user_id,
            UserIdentityRow.issuer == issuer,
            UserIdentityRow.subject == subject,
        )
        async with self._db.session() as session:
            result = await session.execute(delete(UserIdentityRow).where(*mine))
            await session.commit()
        if not getattr(result, "rowcount", 0):
            msg = f"user {user_id!r} is not bound to the subject {subject!r} of {issuer!r}"
            raise NotFoundError(msg, param="subject")

    async def add_session(
        self, session_id: str, user: User, *, address: str, user_agent: str, expires_at: datetime
    ) -> None:
        """Record a new session of ``user`` (its id is the id of the key its cookie holds)."""
        now = self._clock()
        row = UserSessionRow(
            id=session_id,
            user_id=user.id,
            address=address[:64],
            user_agent=user_agent[:300],
            created_at=now,
            expires_at=expires_at,
        )
        async with self._db.session() as session:
            session.add(row)
            await session.execute(
                update(UserRow).where(UserRow.id == user.id).values(last_login_at=now)
            )
            await session.commit()

    async def session_user(self, session_id: str) -> User | None:
        """The user of a live session; None when the session is unknown or has expired."""
        query = (
            select(UserRow)
            .join(UserSessionRow, UserSessionRow.user_id == UserRow.id)
            .where(UserSessionRow.id == session_id, UserSessionRow.expires_at > self._clock())
        )
        async with self._db.session() as session:
            row = await session.scalar(query)
        return None if row is None else _user(row)

    async def end_session(self, session_id: str) -> None:
        """Forget one session."""
        async with self._db.session() as session:
            await session.execute(delete(UserSessionRow).where(UserSessionRow.id == session_id))
            await session.commit()

    async def end_sessions(self, user_id: str, *, expired_only: bool = False) -> builtins.list[str]:
        """Forget a user's sessions (or only the expired ones); the ids that were dropped."""
        where = [UserSessionRow.user_id == user_id]
        if expired_only:
            where.append(UserSessionRow.expires_at <= self._clock())
        async with self._db.session() as session:
            ids = list(await session.scalars(select(UserSessionRow.id).where(*where)))
            if ids:
                await session.execute(delete(UserSessionRow).where(UserSessionRow.id.in_(ids)))
                await session.commit()
        return ids


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        role=Role(row.role),
        disabled_at=row.disabled_at,
        last_login_at=row.last_login_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
