"""The event bus: typed events published once and delivered to every consumer group.

``InProcessEventBus`` is the embedded default, ``RedisStreamsEventBus`` the
production backend; both implement ``EventBus`` and ``BusAdmin`` (streams, dead
letters, replay), and ``build_bus`` (``atrium.bus.factory``) picks one from settings.
Request handlers publish through ``EventPublisher`` so they never wait on the bus.
"""

from atrium.bus.admin import BusAdmin, DeadLetter, GroupInfo, ManagedBus, StreamInfo
from atrium.bus.base import (
    Event,
    EventBus,
    EventPublisher,
    Subscription,
    is_replica_group,
    replica_group,
)
from atrium.bus.dedup import EventInProgressError, IdempotentHandler, once_per_event
from atrium.bus.events import (
    EVENT_TYPES,
    KeyChanged,
    RequestCompleted,
    RouteChanged,
    TeamChanged,
)
from atrium.bus.inprocess import InProcessEventBus
from atrium.bus.redis_streams import DeliveryPolicy, RedisStreamsEventBus

__all__ = [
    "EVENT_TYPES",
    "BusAdmin",
    "DeadLetter",
    "DeliveryPolicy",
    "Event",
    "EventBus",
    "EventInProgressError",
    "EventPublisher",
    "GroupInfo",
    "IdempotentHandler",
    "InProcessEventBus",
    "KeyChanged",
    "ManagedBus",
    "RedisStreamsEventBus",
    "RequestCompleted",
    "RouteChanged",
    "StreamInfo",
    "Subscription",
    "TeamChanged",
    "is_replica_group",
    "once_per_event",
    "replica_group",
]
