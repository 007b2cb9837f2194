"""A usage consumer process for the crash test: counts ``request.completed`` until killed.

Usage: python _usage_consumer_process.py DATABASE_URL PREFIX CLAIM_IDLE_MS. It starts a
``UsageRecorder`` on a Redis Streams bus (group ``usage``, consumer ``<host>-<pid>``),
prints ``ready``, and runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from atrium.bus import RedisStreamsEventBus
from atrium.bus.redis_streams import DeliveryPolicy
from atrium.gateway.usage import UsageRecorder
from atrium.store import Database
from atrium.store.usage import UsageRepository


async def main(database_url: str, prefix: str, claim_idle_ms: int) -> None:
    redis = aioredis.Redis(host="127.0.0.1", port=6379)
    policy = DeliveryPolicy(claim_idle_ms=claim_idle_ms, backoff_s=0.01, backoff_max_s=0.05)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)
    recorder = UsageRecorder(bus, UsageRepository(Database(database_url)), flush_seconds=0.05)
    await recorder.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
