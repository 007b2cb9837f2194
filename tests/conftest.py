"""Fixtures shared by every test package."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test reads the developer's own atrium.yaml or ATRIUM_* variables."""
    for name in list(os.environ):
        if name.startswith("ATRIUM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATRIUM_CONFIG", str(tmp_path_factory.mktemp("cfg") / "absent.yaml"))
