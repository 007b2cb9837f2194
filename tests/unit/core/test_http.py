"""EventStreamResponse: streams to the end, and stops when the client leaves first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Message

from atrium.core.http import EventStreamResponse

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


class _Client:
    """An ASGI server's side: records what is sent; ``leave`` makes receive say disconnect."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self.done = asyncio.Event()

    async def receive(self) -> Message:
        # As uvicorn does: "disconnect" once the client left or the response is complete.
        waiters = [asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(self.done.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done.set()

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_streams_every_chunk_and_ends() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            yield part

    client = _Client()
    await EventStreamResponse(chunks(), media_type="text/event-stream")(
        SCOPE, client.receive, client.send
    )
    await asyncio.sleep(0)  # the watcher sees the end of the response and must not cancel
    assert client.body() == b"data: 1\n\ndata: 2\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_client_leaving_stops_the_stream_and_closes_the_iterator() -> None:
    closed = asyncio.Event()
    waiting = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            waiting.set()
            await asyncio.sleep(60)  # a model that is slow to say more
            yield b"data: never\n\n"
        finally:
            closed.set()

    client = _Client()
    response = EventStreamResponse(chunks(), media_type="text/event-stream")
    serving = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await waiting.wait()
    client.gone.set()
    await asyncio.wait_for(serving, 5)  # returns normally: the client leaving is no error
    assert closed.is_set()
    assert client.body() == b"data: 1\n\n"
    assert not serving.cancelled()


async def test_a_cancellation_from_elsewhere_still_cancels() -> None:
    waiting = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        waiting.set()
        await asyncio.sleep(60)
        yield b"data: never\n\n"

    client = _Client()
    response = EventStreamResponse(chunks(), media_type="text/event-stream")
    serving = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await waiting.wait()
    serving.cancel()  # shutdown, not the client
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    assert serving.cancelled()
