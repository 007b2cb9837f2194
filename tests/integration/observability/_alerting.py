"""What the alert tests share: a webhook receiver (served by the conftest's ``receiver``) and a
clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Receiver:
    """A webhook receiver on loopback: /ok keeps what it gets, /down answers 503."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    down_calls: int = 0

    def app(self) -> Starlette:
        async def ok(request: Request) -> Response:
            self.received.append(await request.json())
            return JSONResponse({"ok": True})

        async def down(_: Request) -> Response:
            self.down_calls += 1
            return JSONResponse({"error": "unavailable"}, status_code=503)

        return Starlette(
            routes=[Route("/ok", ok, methods=["POST"]), Route("/down", down, methods=["POST"])]
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Clock:
    """The engine's clock, moved by the test (``for`` durations without waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
