"""Named secrets (connector passwords, API tokens), encrypted at rest with Fernet.

The key comes from settings or, when none is configured, from a key file created on
first start in the data directory (:func:`load_or_create_key`). Whoever holds the
database alone learns secret names and sizes, never values. Each value is encrypted
together with its name, so a ciphertext copied onto another row does not decrypt there.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import Final

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from atrium.core.errors import AtriumError, InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import SecretRow

NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SEPARATOR: Final = b"\x00"


class SecretNotFoundError(NotFoundError):
    """No secret of that name."""

    default_code = "secret_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no secret named {name!r}", param="name")
        self.name = name


class SecretDecryptionError(AtriumError):
    """A stored secret cannot be decrypted: the key changed or the row was tampered with."""

    default_code = "secret_undecryptable"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the secret {name!r} cannot be decrypted with the configured key "
            "(was the key replaced?); store it again"
        )
        self.name = name


class SecretKeyError(AtriumError):
    """The configured or stored encryption key is not a valid Fernet key."""

    default_code = "invalid_secret_key"


def validate_name(name: str) -> str:
    """``name`` if it is 1-100 of ``A-Z a-z 0-9 _ . -``; otherwise a 400."""
    if not NAME_PATTERN.fullmatch(name):
        msg = "a secret name is 1 to 100 letters, digits, '_', '.' or '-'"
        raise InvalidRequestError(msg, param="name")
    return name


def generate_key() -> bytes:
    """A new random Fernet key (32 bytes, URL-safe base64)."""
    return Fernet.generate_key()


def load_or_create_key(path: Path) -> bytes:
    """The Fernet key in ``path``, created there (mode 0600) when the file does not exist.

    Creation is atomic: the key is written to a private temporary file that is then
    linked into place, so replicas starting together agree on one key and none ever
    reads a half-written file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_key_file(path)
    key = path.read_bytes().strip()
    _check_key(key, f"the key file {path}")
    return key


class SecretStore:
    """Stores, reads and deletes named secrets; values are never logged nor listed."""

    def __init__(
        self,
        db: Database,
        fernet_key: bytes,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        _check_key(fernet_key, "the configured secret key")
        self._db = db
        self._fernet = Fernet(fernet_key)
        self._clock = clock

    def __repr__(self) -> str:
        return "SecretStore(<encrypted>)"

    async def put(self, name: str, value: str) -> None:
        """Create or replace the secret ``name``."""
        ciphertext = self._encrypt(validate_name(name), value)
        now = self._clock()
        try:
            await self._write(name, ciphertext, now)
        except IntegrityError:
            # Another writer created the same name between our read and insert.
            await self._write(name, ciphertext, now)

    async def get(self, name: str) -> str:
        """The value of ``name``; :class:`SecretNotFoundError` when there is none."""
        async with self._db.session() as session:
            row = await session.get(SecretRow, name)
        if row is None:
            raise SecretNotFoundError(name)
        return self._decrypt(name, row.ciphertext)

    async def delete(self, name: str) -> bool:
        """Forget a secret; False when there was none."""
        async with self._db.session() as session:
            result = await session.execute(delete(SecretRow).where(SecretRow.name == name))
            await session.commit()
        return bool(getattr(result, "rowcount", 0))

    async def list_names(self) -> list[str]:
        """Every secret's name, sorted (values are never listed)."""
        async with self._db.session() as session:
            names = await session.scalars(select(SecretRow.name).order_by(SecretRow.name))
            return list(names)

    async def _write(self, name: str, ciphertext: str, now: datetime) -> None:
        async with self._db.session() as session:
            row = await session.get(SecretRow, name)
            if row is None:
                session.add(
                    SecretRow(name=name, ciphertext=ciphertext, created_at=now, updated_at=now)
                )
            else:
                row.ciphertext, row.updated_at = ciphertext, now
            await session.commit()

    def _encrypt(self, name: str, value: str) -> str:
        plaintext = name.encode() + _SEPARATOR + value.encode()
        return self._fernet.encrypt(plaintext).decode("ascii")

    def _decrypt(self, name: str, ciphertext: str) -> str:
        try:
            plaintext = self._fernet.decrypt(ciphertext.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretDecryptionError(name) from None
        stored_name, separator, value = plaintext.partition(_SEPARATOR)
        if not separator or stored_name != name.encode():
            raise SecretDecryptionError(name)
        return value.decode()


def _check_key(key: bytes, where: str) -> None:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        msg = f"{where} is not a Fernet key (32 bytes in URL-safe base64)"
        raise SecretKeyError(msg) from None


def _create_key_file(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(generate_key() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        # link() fails when the key exists: whoever linked first wins, the rest read it.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
