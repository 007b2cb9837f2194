"""The bus the settings ask for: Redis Streams when configured, in process otherwise."""

from __future__ import annotations

import redis.asyncio as aioredis

from atrium.bus.admin import ManagedBus
from atrium.bus.inprocess import InProcessEventBus
from atrium.bus.redis_streams import DeliveryPolicy, RedisStreamsEventBus
from atrium.core.settings import BusSettings


def build_bus(settings: BusSettings, redis: aioredis.Redis | None) -> ManagedBus:
    """A ``RedisStreamsEventBus`` on ``redis`` when ``settings.backend`` is redis, else the
    in-process bus, both with the settings' retries and dead-lettering."""
    if redis is not None and settings.backend == "redis":
        policy = DeliveryPolicy(
            max_deliveries=settings.max_deliveries,
            claim_idle_ms=max(3, int(settings.claim_idle_seconds * 1000)),
            backoff_s=settings.retry_backoff_seconds,
            backoff_max_s=settings.retry_backoff_max_seconds,
            publish_attempts=settings.publish_attempts,
        )
        return RedisStreamsEventBus(
            redis,
            stream_prefix=settings.stream_prefix,
            max_stream_length=settings.max_stream_length,
            policy=policy,
            replica_group_idle_s=settings.replica_group_idle_seconds,
        )
    return InProcessEventBus(
        max_attempts=settings.max_deliveries,
        retry_backoff_s=settings.retry_backoff_seconds,
        retry_backoff_max_s=settings.retry_backoff_max_seconds,
        history_size=min(settings.max_stream_length, 10_000),
    )
