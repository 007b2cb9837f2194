"""A consumer process for the crash test: handles events until it is killed.

Usage: python _consumer_process.py PREFIX CLAIM_IDLE_MS. It subscribes as consumer
``doomed`` of group ``work``, prints ``ready``, and for every event pushes the event's
id onto ``PREFIX + "started"`` and then hangs in the handler, as a process does that
dies mid-message.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from atrium.bus import RedisStreamsEventBus, RequestCompleted
from atrium.bus.dedup import IdempotentHandler
from atrium.bus.redis_streams import DeliveryPolicy


async def main(prefix: str, claim_idle_ms: int) -> None:
    redis = aioredis.Redis(host="127.0.0.1", port=6379)
    policy = DeliveryPolicy(claim_idle_ms=claim_idle_ms, backoff_s=0.01, backoff_max_s=0.05)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)

    async def hang(event: RequestCompleted) -> None:
        await redis.rpush(prefix + "started", event.id)
        await asyncio.Event().wait()

    handler = IdempotentHandler(
        redis, hang, scope="work", prefix=prefix + "seen:", lease_ms=claim_idle_ms
    )
    await bus.subscribe(RequestCompleted, "work", "doomed", handler)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
