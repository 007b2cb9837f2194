"""One replica's durable ``request.completed`` consumers, for ``events_bus.py --parts consumers``.

The audit consumer (``AuditRecorder``, group ``audit``) and the usage consumer
(``UsageRecorder``, group ``usage``) on a Redis Streams bus, wired as ``build_platform``
wires them with the default settings and ``bus.backend: redis``: the bus from
``build_bus``, the audit settings' flush and queue, the store's pool size, consumer
``<host>-<pid>``, ``CONSUMER_CONCURRENCY`` handlers at once, each returning only once its
event is committed to the store. It prints ``ready`` once both have joined their groups
and consumes until SIGTERM; then it stops them as ``Platform.close`` does and writes OUT_JSON.

Its Redis client notes when each ``XACK`` reply arrives, on ``CLOCK_MONOTONIC`` (one clock
for every process on the machine, which the bench reads before each ``XADD``). OUT_JSON:
``{"acks": {group: [[seconds, [entry id, ...], acknowledged], ...]}}``, where
``acknowledged`` is Redis's count of those entries that were still pending.

    .venv/bin/python bench/_durable_consumers.py STORE_URL STREAM_PREFIX OUT_JSON
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from atrium.audit import AuditRecorder, AuditRepository
from atrium.bus._redis_consumer import as_text
from atrium.bus.factory import build_bus
from atrium.core.settings import Settings
from atrium.gateway.usage import UsageRecorder
from atrium.store import Database
from atrium.store.usage import UsageRepository


def clock() -> float:
    """Seconds on ``CLOCK_MONOTONIC``, comparable between processes on one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class AckTimedRedis(aioredis.Redis):
    """A Redis client that notes when each ``XACK`` reply arrives, and for which entries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks: dict[str, list[tuple[float, list[str], int]]] = {}

    async def xack(self, name: Any, groupname: Any, *ids: Any) -> Any:
        """``XACK``, timed."""
        answer = await super().xack(name, groupname, *ids)
        group = self.acks.setdefault(as_text(groupname), [])
        group.append((clock(), [as_text(i) for i in ids], int(answer)))
        return answer


async def main(store_url: str, prefix: str) -> dict[str, list[tuple[float, list[str], int]]]:
    """Consume until SIGTERM; the acknowledgement times by group."""
    settings = Settings.model_validate(
        {"store": {"url": store_url}, "bus": {"backend": "redis", "stream_prefix": prefix}}
    )
    redis = AckTimedRedis.from_url(settings.redis.url)
    assert isinstance(redis, AckTimedRedis)  # from_url builds the class it is called on
    db = Database(settings.store_url, pool_size=settings.store.pool_size, echo=settings.store.echo)
    bus = build_bus(settings.bus, redis)
    record = settings.audit
    audit = AuditRecorder(
        AuditRepository(db), bus=bus, flush_seconds=record.flush_seconds, max_queue=record.queue
    )
    usage = UsageRecorder(bus, UsageRepository(db))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with db.session() as session:  # one pooled connection open before the clock
            await session.execute(text("SELECT 1"))
        await bus.start()
        await audit.start()
        await usage.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        # Platform.close's order: the consumers, then the bus, Redis and the store.
        await usage.close()
        await audit.close()
        await bus.close()
        await redis.aclose()
        await db.close()
    return redis.acks


if __name__ == "__main__":
    acks = asyncio.run(main(sys.argv[1], sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps({"acks": acks}))
