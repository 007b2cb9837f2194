"""Fixtures for the alert tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tests.integration.observability._alerting import Receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver served on a free loopback port for the test module (each test
    clears what it kept)."""
    served = Receiver()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        served.port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(served.app(), host="127.0.0.1", port=served.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.02)
    yield served
    server.should_exit = True
    thread.join(timeout=10)
