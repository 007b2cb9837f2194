"""A fixed OpenAI-compatible chat completion on loopback, for benches of the gateway path.

A bare ASGI app under uvicorn, in a process of its own (so a bench that measures its
own CPU time does not count the upstream's): ``POST /v1/chat/completions`` answers
the same small completion every time, ``GET /v1/models`` an empty list.

    .venv/bin/python bench/_chat_upstream.py --port 8199
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "mock-gpt",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()
MODELS = b'{"object": "list", "data": []}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every chat completion with :data:`COMPLETION` (the request body is drained)."""
    if scope["type"] != "http":
        return
    more = True
    while more:  # the body is not read, only drained
        more = (await receive()).get("more_body", False)
    body = COMPLETION if scope["path"].endswith("/chat/completions") else MODELS
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve on ``--port`` until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
