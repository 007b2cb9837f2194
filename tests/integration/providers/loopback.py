"""A Starlette app served by uvicorn on 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

STARTUP_TIMEOUT_S = 10.0


class LoopbackServer:
    """Serves ``app`` on a port of its own until the ``with`` block ends."""

    def __init__(self, app: ASGIApp) -> None:
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        # Bound here, before the thread starts: the port is known and never raced for.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                msg = "the loopback server did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # force_exit: a test that stalls a response must not hold up the teardown.
        self._server.should_exit = self._server.force_exit = True
        self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._socket.close()
