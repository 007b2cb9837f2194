"""Upstream credentials read from the encrypted secret store at use, not from settings.

A provider model may name its API key as a stored secret (``api_key_secret``)
instead of holding it in the settings file. The backend asks a
:class:`StoredCredential` for the value before each call; the value is kept in
memory for ``refresh_s`` seconds, so a key rotated in the store (``PUT
/v1/admin/secrets/NAME``) is used from the next refresh on, without a restart.
The value is never logged, and its ``repr`` does not show it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from atrium.core.errors import NotFoundError, UpstreamError

log = logging.getLogger("atrium.runtime.credentials")


class SecretReader(Protocol):
    """Reads a named secret (``atrium.store.secrets.SecretStore``)."""

    async def get(self, name: str) -> str:
        """The value of ``name``; raises a ``NotFoundError`` when there is none."""
        ...


class CredentialUnavailableError(UpstreamError):
    """The stored secret holding a model's upstream key cannot be read."""

    default_code = "upstream_credential_unavailable"


class StoredCredential:
    """A model's upstream API key, held as the stored secret ``name``.

    Read on first use and again once ``refresh_s`` seconds have passed (0: on
    every call). Concurrent callers share one read. When a refresh fails after an
    earlier success, the last value goes on being used (logged, retried next call),
    so a store outage does not take the model down; a deleted secret, or a first
    read that fails, raises :class:`CredentialUnavailableError` (a 502 naming the
    secret, never a value).
    """

    def __init__(
        self,
        name: str,
        reader: SecretReader,
        *,
        model: str,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._reader = reader
        self._model = model
        self._refresh_s = refresh_s
        self._clock = clock
        self._value: str | None = None
        self._fresh_until = -math.inf
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"StoredCredential({self.name!r})"

    async def value(self) -> str:
        """The current key (from memory while fresh)."""
        if self._value is not None and self._clock() < self._fresh_until:
            return self._value
        async with self._lock:
            if self._value is not None and self._clock() < self._fresh_until:
                return self._value  # another caller refreshed it while we waited
            return await self._read()

    async def _read(self) -> str:
        try:
            value = await self._reader.get(self.name)
        except NotFoundError as exc:
            self._value = None  # deleted on purpose: stop using it
            raise self._unavailable() from exc
        except Exception as exc:  # the store is down, or the value undecryptable
            if self._value is None:
                raise self._unavailable() from exc
            log.warning(
                "reading secret %r for model %r failed (%s); using the last value",
                self.name,
                self._model,
                type(exc).__name__,
            )
            return self._value
        self._value = value
        self._fresh_until = self._clock() + self._refresh_s
        return value

    def _unavailable(self) -> CredentialUnavailableError:
        msg = f"the upstream key of model {self._model!r} (secret {self.name!r}) cannot be read"
        return CredentialUnavailableError(msg)
