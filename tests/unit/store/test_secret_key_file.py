"""The secret store's key file: created once, private, shared by concurrent starters."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from atrium.store.secrets import SecretKeyError, load_or_create_key


def test_the_key_file_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    key = load_or_create_key(path)
    Fernet(key)  # a valid key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


def test_concurrent_starters_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(path), range(32)))
    assert keys == {path.read_bytes().strip()}


def test_a_corrupt_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"not a key\n")
    with pytest.raises(SecretKeyError, match=str(path)):
        load_or_create_key(path)
    assert path.read_bytes() == b"not a key\n"
