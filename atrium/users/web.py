"""The web UI's services, built from settings in one call (for the composition root)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis

from atrium.core.settings import WebSettings
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.db import Database
from atrium.store.hot import HotState
from atrium.store.keys import ApiKeyRepository
from atrium.store.secrets import SecretStore
from atrium.users.conversations import CachedConversations, ConversationRepository, Conversations
from atrium.users.oidc import OidcProvider
from atrium.users.oidc_flow import OidcSignIn, StateSigner
from atrium.users.passwords import HashCost, Passwords
from atrium.users.repository import UserRepository
from atrium.users.service import Publish, UserService
from atrium.users.sessions import CookiePolicy, CsrfTokens
from atrium.users.throttle import InProcessLoginThrottle, LoginThrottle, RedisLoginThrottle

AdminAnnouncer = Callable[[str, str], None]


def announce_admin_to_stderr(username: str, password: str) -> None:
    """Print the first admin's generated password, once."""
    sys.stderr.write(
        "\nCreated the first web UI user. Its password is shown only this once:\n\n"
        f"    username: {username}\n    password: {password}\n\n"
        "Sign in at the server's address and change it under Admin.\n\n"
    )


@dataclass
class WebServices:
    """Users, sessions, CSRF, cookies and conversations, as the routers need them."""

    users: UserService
    conversations: Conversations
    csrf: CsrfTokens
    cookies: CookiePolicy
    ui_dir: Path | None
    admin_username: str
    admin_password: str | None
    oidc: OidcSignIn | None = None
    announce: AdminAnnouncer = announce_admin_to_stderr

    async def start(self) -> None:
        """Create the first admin when no user exists yet (after the store is migrated)."""
        await self.users.ensure_first_admin(self.admin_username, self.admin_password, self.announce)


def build_web(
    options: WebSettings,
    *,
    db: Database,
    keys: ApiKeyRepository,
    auth: KeyAuthenticator,
    secret_key: bytes,
    redis: aioredis.Redis | None = None,
    hot: HotState | None = None,
    hot_ttl_seconds: float = 300.0,
    publish: Publish | None = None,
) -> WebServices:
    """Build the web UI's services; the login throttle lives in Redis when one is used,
    conversations are read through ``hot`` state when given, and user changes are
    announced through ``publish`` (``user.changed``)."""
    throttle: LoginThrottle
    if redis is not None:
        throttle = RedisLoginThrottle(
            redis,
            max_failures=options.login_max_failures,
            window_seconds=options.login_window_seconds,
        )
    else:
        throttle = InProcessLoginThrottle(
            max_failures=options.login_max_failures, window_seconds=options.login_window_seconds
        )
    csrf = CsrfTokens(secret_key)
    cost = HashCost(time_cost=options.password_time_cost, memory_kib=options.password_memory_kib)
    users = UserService(
        users=UserRepository(db),
        keys=keys,
        auth=auth,
        passwords=Passwords(cost, min_length=options.password_min_length),
        throttle=throttle,
        csrf=csrf,
        session_ttl=timedelta(hours=options.session_hours),
        publish=publish,
    )
    return WebServices(
        users=users,
        oidc=_oidc(options, users, db=db, secret_key=secret_key),
        conversations=(
            ConversationRepository(db)
            if hot is None
            else CachedConversations(ConversationRepository(db), hot, ttl_seconds=hot_ttl_seconds)
        ),
        csrf=csrf,
        cookies=CookiePolicy(secure=options.cookie_secure),
        ui_dir=options.ui_dir,
        admin_username=options.admin_username,
        admin_password=(
            None if options.admin_password is None else options.admin_password.get_secret_value()
        ),
    )


def _oidc(
    options: WebSettings, users: UserService, *, db: Database, secret_key: bytes
) -> OidcSignIn | None:
    """OpenID Connect sign-in when enabled; its client secret is read from the secret
    store (encrypted with the same key) at each sign-in, so a rotated secret applies."""
    oidc = options.oidc
    if not oidc.enabled:
        return None
    return OidcSignIn(
        oidc,
        provider=OidcProvider(oidc.issuer, timeout_seconds=oidc.http_timeout_seconds),
        users=users,
        signer=StateSigner(secret_key),
        read_secret=SecretStore(db, secret_key).get,
    )
