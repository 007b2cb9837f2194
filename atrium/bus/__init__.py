"""The event bus: typed events published once and delivered to every consumer group.

``InProcessEventBus`` is the embedded default, ``RedisStreamsEventBus`` the
production backend; both implement ``EventBus``. Request handlers publish
through ``EventPublisher`` so they never wait on the bus.
"""

from atrium.bus.base import Event, EventBus, EventPublisher, Subscription
from atrium.bus.events import EVENT_TYPES, RequestCompleted, RouteChanged
from atrium.bus.inprocess import InProcessEventBus
from atrium.bus.redis_streams import RedisStreamsEventBus

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventBus",
    "EventPublisher",
    "InProcessEventBus",
    "RedisStreamsEventBus",
    "RequestCompleted",
    "RouteChanged",
    "Subscription",
]
