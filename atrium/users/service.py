"""Users, sign-in and sign-out: what the auth routes and the first start call."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from atrium.bus.base import Event
from atrium.bus.events import UserChanged
from atrium.core.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from atrium.gateway.auth import KeyAuthenticator, Principal
from atrium.store.keys import ApiKeyRepository
from atrium.users.passwords import Passwords
from atrium.users.repository import (
    MAX_DISPLAY_NAME,
    Role,
    User,
    UserRepository,
    check_display_name,
    normalize_username,
)
from atrium.users.sessions import CsrfTokens
from atrium.users.throttle import LoginThrottle, throttle_subject

BAD_CREDENTIALS = "Incorrect username or password."
SESSION_KEY_NAME = "web session"
# Stored as the password hash of provider-only users: not an argon2 hash, so never verifies.
NO_PASSWORD = "!federated"  # noqa: S105 (a marker, not a password)

PasswordAnnouncer = Callable[[str, str], None]
#: Hands an event to the bus without waiting (``EventPublisher.publish_urgent``).
Publish = Callable[[Event], object]


@dataclass(frozen=True, slots=True)
class SignIn:
    """A new session: its user, the cookie's secret, its CSRF token and expiry."""

    user: User
    secret: str = field(repr=False)
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What an admin changes about a user; ``None`` leaves a field as it is."""

    role: Role | None = None
    disabled: bool | None = None
    display_name: str | None = None
    password: str | None = field(default=None, repr=False)


#: The ``user.changed`` name of each stored column an update may set.
_FIELD_NAMES = {"role": "role", "disabled_at": "disabled", "display_name": "display_name",
                "password_hash": "password"}  # fmt: skip


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserService:
    """Creates and manages users; signs them in (a session = a short-lived API key with
    the scopes of the user's role) and out."""

    def __init__(
        self,
        *,
        users: UserRepository,
        keys: ApiKeyRepository,
        auth: KeyAuthenticator,
        passwords: Passwords,
        throttle: LoginThrottle,
        csrf: CsrfTokens,
        session_ttl: timedelta,
        clock: Callable[[], datetime] = _utcnow,
        publish: Publish | None = None,
    ) -> None:
        self.users = users
        self._publish = publish
        self._keys = keys
        self._auth = auth
        self._passwords = passwords
        self._throttle = throttle
        self._csrf = csrf
        self._ttl = session_ttl
        self._clock = clock

    async def create_user(
        self,
        *,
        username: str,
        password: str,
        role: Role,
        display_name: str = "",
        by: User | None = None,
    ) -> User:
        """A new user; 400 for a bad name or weak password, 409 when the name is taken."""
        normalize_username(username)
        check_display_name(display_name)
        self._passwords.check_policy(password)
        password_hash = await self._passwords.hash(password)
        user = await self.users.create(
            username=username, password_hash=password_hash, role=role, display_name=display_name
        )
        self._announce(user, "created", by=by)
        return user

    async def update_user(self, user_id: str, changes: UserChanges, *, by: User | None) -> User:
        """Apply an admin's changes; a new role, a disabled account or a new password
        ends the user's sessions (their scopes were fixed at sign-in)."""
        user = await self.users.get(user_id)
        if by is not None and by.id == user.id:
            _check_self_change(changes)
        values: dict[str, object] = {}
        if changes.role is not None and changes.role != user.role:
            values["role"] = changes.role.value
        if changes.disabled is not None and changes.disabled != (user.disabled_at is not None):
            values["disabled_at"] = self._clock() if changes.disabled else None
        if changes.display_name is not None:
            values["display_name"] = check_display_name(changes.display_name)
        if changes.password is not None:
            self._passwords.check_policy(changes.password)
            values["password_hash"] = await self._passwords.hash(changes.password)
        if not values:
            return user
        updated = await self.users.update(user_id, **values)
        if {"role", "disabled_at", "password_hash"} & values.keys():
            await self._end_sessions(user_id)
        fields = [_FIELD_NAMES[name] for name in values]
        self._announce(updated, "updated", by=by, fields=fields)
        return updated

    async def sign_in(
        self, username: str, password: str, *, address: str, user_agent: str
    ) -> SignIn:
        """A new session; 401 with one message for an unknown name or a wrong password,
        403 for a disabled account, 429 after too many failures from one address."""
        subject = throttle_subject(username, address)
        await self._throttle.check(subject)
        found = await self.users.credentials(username)
        stored = None if found is None else found[1]
        if not await self._passwords.verify(stored, password) or found is None:
            await self._throttle.failed(subject)
            raise AuthenticationError(BAD_CREDENTIALS, code="invalid_credentials")
        user, password_hash = found
        if user.disabled_at is not None:
            raise PermissionDeniedError("this account is disabled", code="account_disabled")
        await self._throttle.succeeded(subject)
        if self._passwords.needs_rehash(password_hash):
            await self.users.update(user.id, password_hash=await self._passwords.hash(password))
        return await self._open_session(user, address=address, user_agent=user_agent)

    async def open_session(self, user: User, *, address: str, user_agent: str) -> SignIn:
        """A new session for a user another party vouched for (an OpenID Connect
        provider); 403 for a disabled account. The same session a password sign-in opens."""
        if user.disabled_at is not None:
            raise PermissionDeniedError("this account is disabled", code="account_disabled")
        return await self._open_session(user, address=address, user_agent=user_agent)

    async def create_federated_user(self, *, username: str, role: Role, display_name: str) -> User:
        """A user who signs in only through an identity provider: no password works."""
        user = await self.users.create(
            username=username,
            password_hash=NO_PASSWORD,
            role=role,
            display_name=display_name[:MAX_DISPLAY_NAME],
        )
        self._announce(user, "created", by=None)
        return user

    async def sign_out(self, principal: Principal) -> None:
        """End the session the request came with (revoke its key); 403 for an API key."""
        await self.user_of(principal)
        await self._keys.revoke(principal.key_id)
        self._auth.forget(principal.key_id)
        await self.users.end_session(principal.key_id)

    async def user_of(self, principal: Principal) -> User:
        """The signed-in user behind a request's principal; 403 when it is an API key."""
        user = await self.users.session_user(principal.key_id)
        if user is None:
            msg = "this route needs a signed-in user (a browser session), not an API key"
            raise PermissionDeniedError(msg, code="session_required")
        if user.disabled_at is not None:
            raise PermissionDeniedError("this account is disabled", code="account_disabled")
        return user

    async def ensure_first_admin(
        self, username: str, password: str | None, announce: PasswordAnnouncer
    ) -> User | None:
        """Create the first admin when there are no users yet; a generated password is
        handed to ``announce`` (shown once). None when users already exist."""
        if await self.users.count() > 0:
            return None
        chosen = password if password is not None else secrets.token_urlsafe(15)
        admin = await self.create_user(username=username, password=chosen, role=Role.ADMIN)
        if password is None:
            announce(admin.username, chosen)
        return admin

    def _announce(
        self, user: User, change: str, *, by: User | None, fields: list[str] | None = None
    ) -> None:
        if self._publish is None:
            return
        self._publish(
            UserChanged(
                user_id=user.id,
                username=user.username,
                change=change,
                fields=fields or [],
                role=user.role.value,
                disabled=user.disabled_at is not None,
                by=by.id if by is not None else None,
            )
        )

    async def _open_session(self, user: User, *, address: str, user_agent: str) -> SignIn:
        await self._end_expired(user.id)
        expires_at = self._clock() + self._ttl
        new = await self._keys.create(
            name=SESSION_KEY_NAME,
            owner=f"user:{user.username}",
            scopes=user.scopes,
            expires_at=expires_at,
        )
        await self.users.add_session(
            new.record.id, user, address=address, user_agent=user_agent, expires_at=expires_at
        )
        return SignIn(user, new.secret, self._csrf.for_session(new.secret), expires_at)

    async def _end_sessions(self, user_id: str) -> None:
        for session_id in await self.users.end_sessions(user_id):
            await self._keys.revoke(session_id)
            self._auth.forget(session_id)

    async def _end_expired(self, user_id: str) -> None:
        for session_id in await self.users.end_sessions(user_id, expired_only=True):
            self._auth.forget(session_id)


def _check_self_change(changes: UserChanges) -> None:
    """An admin cannot lock themselves out (the last admin would leave none)."""
    if changes.disabled:
        raise InvalidRequestError("you cannot disable your own account", param="disabled")
    if changes.role is not None and changes.role != Role.ADMIN:
        raise InvalidRequestError("you cannot take away your own admin role", param="role")
