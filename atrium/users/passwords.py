"""Password hashing with argon2id, off the event loop, and the password policy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from atrium.core.errors import InvalidRequestError

MAX_PASSWORD_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class HashCost:
    """argon2id's cost: RFC 9106's second recommendation by default (64 MiB, 3 passes)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


class Passwords:
    """Hashes and verifies passwords; each call runs in a worker thread (argon2 is slow
    on purpose, and must not stall the event loop)."""

    def __init__(self, cost: HashCost | None = None, *, min_length: int = 10) -> None:
        cost = cost or HashCost()
        self._hasher = PasswordHasher(
            time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism
        )
        self._min_length = min_length
        # Verified against when the user does not exist, so that an unknown name
        # costs as long as a wrong password and timing tells the two apart no more.
        self._dummy = self._hasher.hash("atrium-dummy-password")

    def check_policy(self, password: str, *, param: str = "password") -> None:
        """400 unless the password is long enough (and not absurdly long)."""
        if len(password) < self._min_length:
            msg = f"the password must be at least {self._min_length} characters"
            raise InvalidRequestError(msg, param=param, code="weak_password")
        if len(password) > MAX_PASSWORD_CHARS:
            msg = f"the password must be at most {MAX_PASSWORD_CHARS} characters"
            raise InvalidRequestError(msg, param=param)

    async def hash(self, password: str) -> str:
        """The argon2id hash (salt and parameters included) of a password."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, False after as long."""
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """Whether the hash was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(stored)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return stored is not None
