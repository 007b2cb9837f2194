"""``atrium users ...``: web UI users on the store directly (the first admin, a lost
password), for when nobody can sign in to do it in the UI.

Changes are announced as the admin API announces them (``user.changed``, and
``key.changed`` for each web session a new password ends), on the bus when it is Redis.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError

from atrium._cli import ConfigOption, err, fail, out
from atrium._cli_bus import Announcements, announce
from atrium.core.errors import AtriumError, NotFoundError
from atrium.core.settings import load_settings
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.db import Database
from atrium.store.keys import ApiKeyRepository
from atrium.users.repository import Role
from atrium.users.service import UserChanges, UserService
from atrium.users.web import build_web

T = TypeVar("T")

users_app = typer.Typer(help="Web UI users (works on the store directly).", no_args_is_help=True)

PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="ATRIUM_USER_PASSWORD",
        help="The password (or ATRIUM_USER_PASSWORD); generated and printed once when absent.",
    ),
]


def _with_users(
    config: Path | None, work: Callable[[UserService], Awaitable[T]], show: Callable[[T], None]
) -> None:
    """Run ``work`` on the store, ``show`` its result, then announce what it changed (shown
    first: a generated password must not be lost to a bus that is down)."""
    try:
        settings = load_settings(config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise fail(f"invalid settings: {exc}") from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    announced = Announcements()

    async def run() -> T:
        db = Database(settings.store_url)
        try:
            await db.migrate()
            keys = ApiKeyRepository(db, prefix=settings.auth.key_prefix)
            auth = KeyAuthenticator(keys, ttl=0, publish=announced)
            # No request is served here: the CSRF key only has to exist.
            web = build_web(
                settings.web, db=db, keys=keys, auth=auth, secret_key=secrets.token_bytes(32),
                publish=announced,
            )  # fmt: skip
            return await work(web.users)
        finally:
            await db.close()

    try:
        show(asyncio.run(run()))
    except AtriumError as exc:
        raise fail(exc.message) from None
    try:
        asyncio.run(announce(settings, announced))
    except RedisError as exc:
        # The change is made: no retry of the command, which would change it again.
        raise fail(
            f"the change is stored, but announcing it on the bus failed ({exc}); other "
            "replicas learn of it when their cached copies expire"
        ) from None


def _announce(username: str, password: str | None, generated: str) -> None:
    if password is None:
        out.print(f"username: {username}\npassword: {generated}", highlight=False)
        err.print("The password is shown only this once.")
    else:
        out.print(f"username: {username}", highlight=False)


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="The admin's username.")],
    password: PasswordOption = None,
    config: ConfigOption = None,
) -> None:
    """Create an admin user (the first one, or another)."""
    chosen = password if password is not None else secrets.token_urlsafe(15)

    async def work(users: UserService) -> str:
        user = await users.create_user(username=username, password=chosen, role=Role.ADMIN)
        return user.username

    _with_users(config, work, lambda name: _announce(name, password, chosen))


@users_app.command("set-password")
def set_password(
    username: Annotated[str, typer.Argument(help="Whose password to set.")],
    password: PasswordOption = None,
    config: ConfigOption = None,
) -> None:
    """Set a user's password (ends their sessions); re-enables nothing else."""
    chosen = password if password is not None else secrets.token_urlsafe(15)

    async def work(users: UserService) -> str:
        found = await users.users.credentials(username)
        if found is None:
            raise NotFoundError(f"no user {username!r}", param="username")
        user = found[0]
        await users.update_user(user.id, UserChanges(password=chosen), by=None)
        return user.username

    _with_users(config, work, lambda name: _announce(name, password, chosen))
