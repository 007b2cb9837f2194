"""Passwords: argon2id hashes that verify, refuse wrong passwords, and the policy."""

from __future__ import annotations

import pytest

from atrium.core.errors import InvalidRequestError
from atrium.users.passwords import MAX_PASSWORD_CHARS, HashCost, Passwords

CHEAP = HashCost(time_cost=1, memory_kib=8 * 1024, parallelism=1)


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(CHEAP, min_length=10)


async def test_a_hash_verifies_its_password_and_nothing_else(passwords: Passwords) -> None:
    stored = await passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await passwords.verify(stored, "correct horse battery")
    assert not await passwords.verify(stored, "correct horse batterY")


async def test_two_hashes_of_one_password_differ_by_salt(passwords: Passwords) -> None:
    assert await passwords.hash("same password!") != await passwords.hash("same password!")


async def test_no_stored_hash_never_verifies(passwords: Passwords) -> None:
    # The dummy hash's own password must not open an account that does not exist.
    assert not await passwords.verify(None, "atrium-dummy-password")
    assert not await passwords.verify("not-a-hash", "whatever password")


async def test_an_absurdly_long_password_is_refused_without_hashing(passwords: Passwords) -> None:
    stored = await passwords.hash("x" * 20)
    assert not await passwords.verify(stored, "x" * (MAX_PASSWORD_CHARS + 1))


def test_policy_names_the_field(passwords: Passwords) -> None:
    with pytest.raises(InvalidRequestError) as short:
        passwords.check_policy("too short")
    assert short.value.param == "password"
    assert short.value.code == "weak_password"
    with pytest.raises(InvalidRequestError):
        passwords.check_policy("y" * (MAX_PASSWORD_CHARS + 1))
    passwords.check_policy("long enough now")


async def test_other_parameters_need_a_rehash(passwords: Passwords) -> None:
    stronger = Passwords(HashCost(time_cost=2, memory_kib=8 * 1024, parallelism=1))
    stored = await passwords.hash("a good password")
    assert not passwords.needs_rehash(stored)
    assert stronger.needs_rehash(stored)
