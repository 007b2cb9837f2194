"""A replica for the sweep test: follows key changes until it is killed.

Usage: python _replica_process.py PREFIX CLAIM_IDLE_MS. It subscribes to ``key.changed``
in a group of its own (``replica_group``) and in the shared group ``audit``, then prints
its own group's name, as a gateway replica does that dies without shutting down.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from atrium.bus import KeyChanged, RedisStreamsEventBus, replica_group
from atrium.bus.redis_streams import DeliveryPolicy


async def main(prefix: str, claim_idle_ms: int) -> None:
    redis = aioredis.Redis(host="127.0.0.1", port=6379)
    policy = DeliveryPolicy(claim_idle_ms=claim_idle_ms)
    bus = RedisStreamsEventBus(redis, stream_prefix=prefix, block_ms=20, policy=policy)
    group = replica_group("keys")

    async def ignore(_: KeyChanged) -> None:
        return None

    await bus.subscribe(KeyChanged, group, "c", ignore)
    await bus.subscribe(KeyChanged, "audit", "c", ignore)
    print(group, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
