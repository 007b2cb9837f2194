"""Alerting with several replicas on a real Redis: every replica's engine hears every
event (a consumer group of its own), and each alert transition is notified, and
announced on the bus, once for the whole fleet (claimed in Redis), also when the
replica that fired an alert dies before it resolves."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge

from atrium.bus import Event, EventPublisher, RedisStreamsEventBus
from atrium.bus.events import AlertFired, AlertResolved, KnowledgeSynced
from atrium.core.netguard import NetworkPolicy
from atrium.observability.alert_claims import FleetClaims, ToldAlert, claim_key
from atrium.observability.alerts import AlertEngine, AlertService, build_alert_service
from atrium.observability.config import AlertSettings
from atrium.observability.notifications import Notifications, build_notifiers, webhook_client
from tests.integration.observability._alerting import Receiver

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
RULE = "sync-failures"


def _settings(receiver: Receiver, prefix: str, rules: list[dict[str, Any]]) -> AlertSettings:
    return AlertSettings.model_validate(
        {
            "interval_seconds": 0.05,
            "rules": rules,
            "notifiers": [{"name": "ops", "kind": "webhook", "url": receiver.url("/ok")}],
            "attempts": 2,
            "retry_backoff_seconds": 0.05,
            "allow_private_networks": True,  # the receiver is on loopback
            "redis_prefix": f"{prefix}alerts:",
        }
    )


async def until(what: str, check: Callable[[], bool], *, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not {what}"
        await asyncio.sleep(0.02)


def failed_sync() -> KnowledgeSynced:
    counts = {"documents_seen": 0, "added": 0, "updated": 0, "deleted": 0, "failed_documents": 0}
    return KnowledgeSynced(
        kb_id="kb-1", knowledge_base="handbook", source_id="src-1", source="share",
        status="failed", error="unreachable", **counts,
    )  # fmt: skip


@dataclass
class Fleet:
    replicas: list[AlertService]
    publisher: EventPublisher
    announced: list[Event]

    def states(self) -> list[str | None]:
        """Each replica's state of the rule's alert (None: none active)."""
        out: list[str | None] = []
        for service in self.replicas:
            alert = service.engine.active.get(RULE)
            out.append(alert.state if alert is not None else None)
        return out

    def resolved_everywhere(self, times: int) -> bool:
        return all(
            len([a for a in s.engine.resolved if a.rule == RULE]) == times for s in self.replicas
        )


@pytest_asyncio.fixture
async def fleet(
    receiver: Receiver, shared_redis: tuple[aioredis.Redis, str]
) -> AsyncIterator[Fleet]:
    """Two replicas (alert services, each with its own bus) on one Redis Streams bus."""
    client, prefix = shared_redis
    receiver.received.clear()
    rules = [{"name": RULE, "kind": "event", "event": "knowledge.sync.finished",
              "match": {"status": "failed"}, "op": ">=", "threshold": 3,
              "window_seconds": 0.8, "summary": "syncs keep failing"}]  # fmt: skip
    settings = _settings(receiver, prefix, rules)
    buses = [RedisStreamsEventBus(client, stream_prefix=f"{prefix}events:", block_ms=20)
             for _ in range(3)]  # fmt: skip
    for bus in buses:
        await bus.start()
    publisher = EventPublisher(buses[2])
    await publisher.start()
    announced: list[Event] = []

    async def keep(event: Event) -> None:
        announced.append(event)

    await buses[2].subscribe(AlertFired, "test-watch", "c", keep)
    await buses[2].subscribe(AlertResolved, "test-watch", "c", keep)
    replicas = []
    for bus in buses[:2]:
        service = build_alert_service(settings, CollectorRegistry(), bus=bus,
                                      policy=NetworkPolicy(allow_private=True),
                                      publish=publisher.publish_nowait, redis=client)  # fmt: skip
        assert service is not None
        await service.start()
        replicas.append(service)
    try:
        yield Fleet(replicas, publisher, announced)
    finally:
        for service in replicas:
            await service.close()
        await publisher.close()
        for bus in buses:
            await bus.close()


async def test_every_replica_counts_every_event_and_the_fleet_is_notified_once(
    fleet: Fleet, receiver: Receiver
) -> None:
    a, b = fleet.replicas
    assert a.engine.replica != b.engine.replica
    for round_ in (1, 2):  # the second firing, after the resolve, is a new transition
        for _ in range(2):
            fleet.publisher.publish_nowait(failed_sync())
        await asyncio.sleep(0.3)
        assert fleet.states() == [None, None]  # 2 < 3 on both: no replica saw only part
        fleet.publisher.publish_nowait(failed_sync())  # each event published once
        await until("firing on both replicas", lambda: fleet.states() == ["firing"] * 2)
        await until("resolved on both", partial(fleet.resolved_everywhere, round_))
        for service in fleet.replicas:
            await service.notifications.drain()
        states = [body["state"] for body in receiver.received if body["rule"] == RULE]
        assert states == ["firing", "resolved"] * round_
        await asyncio.sleep(0.4)  # the last event leaves the window too
    # Each replica recorded every transition: sent by it, or claimed by the other.
    for state in ("firing", "resolved"):
        rows = [d for s in fleet.replicas for d in s.notifications.deliveries if d.state == state]
        assert sorted(d.by_another_replica for d in rows) == [False, False, True, True]
        assert all(d.ok for d in rows)
    await until("the announcements on the bus", lambda: len(fleet.announced) >= 4)
    await asyncio.sleep(0.2)
    assert [e.type for e in fleet.announced] == ["alert.fired", "alert.resolved"] * 2
    public = a.engine.snapshot()["resolved"][0]
    assert public["replica"] == a.engine.replica


@dataclass
class Replica:
    """An engine alone (the test moves it step by step) and its notifications."""

    engine: AlertEngine
    notifications: Notifications

    @classmethod
    def build(
        cls, settings: AlertSettings, registry: CollectorRegistry, claims: FleetClaims
    ) -> Replica:
        client = webhook_client(settings, NetworkPolicy(allow_private=True))
        notifications = Notifications(build_notifiers(settings, client, None), attempts=1,
                                      backoff_seconds=0.0, on_close=client.aclose)  # fmt: skip
        return cls(AlertEngine(settings.rules, registry, notifications, claims=claims),
                   notifications)  # fmt: skip

    async def step(self) -> None:
        """One evaluation, as ``AlertService.tick`` runs it, and its notifications sent."""
        self.engine.evaluate()
        await self.engine.keep_claims()
        await self.engine.resolve_abandoned()
        await self.notifications.drain()


def _gauge_replicas(
    settings: AlertSettings, client: aioredis.Redis, ttl_seconds: float
) -> tuple[list[Replica], list[Gauge]]:
    """Replicas A and B, each with a registry of its own holding the gauge ``test_depth``."""
    replicas, gauges = [], []
    for name in ("replica-a", "replica-b"):
        registry = CollectorRegistry()
        gauges.append(Gauge("test_depth", "A queue's depth.", registry=registry))
        claims = FleetClaims(client, name, prefix=settings.redis_prefix, ttl_seconds=ttl_seconds)
        replicas.append(Replica.build(settings, registry, claims))
    return replicas, gauges


async def test_a_metric_alert_is_told_when_the_first_replica_fires_and_the_last_resolves(
    receiver: Receiver, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    """Metric rules read each replica's own registry: the fleet hears one firing while any
    replica fires it, and one resolve when none does any more."""
    client, prefix = shared_redis
    receiver.received.clear()
    rules = [{"name": "deep", "kind": "gauge", "metric": "test_depth", "threshold": 10}]
    settings = _settings(receiver, prefix, rules)
    replicas, gauges = _gauge_replicas(settings, client, ttl_seconds=30)
    try:
        for depths in ((50, 0), (50, 50), (0, 50), (0, 0), (50, 0), (0, 0)):
            for gauge, depth in zip(gauges, depths, strict=True):
                gauge.set(depth)
            for replica in replicas:
                await replica.step()
        states = [body["state"] for body in receiver.received]
        assert states == ["firing", "resolved", "firing", "resolved"]
    finally:
        for replica in replicas:
            await replica.notifications.close()


def _told(replica: str) -> ToldAlert:
    return ToldAlert("deep", "warning", "too deep", {}, datetime.now(UTC), replica)


async def test_a_replica_that_died_firing_drops_out_after_its_claim_expires(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    client, prefix = shared_redis
    dead = FleetClaims(client, "dead", prefix=prefix, ttl_seconds=0.2)
    live = FleetClaims(client, "live", prefix=prefix, ttl_seconds=0.2)
    key = dead.key("deep", {})
    assert await dead.firing(key, _told("dead"))
    assert not await live.firing(key, _told("live"))  # the dead one still counts
    assert not await live.resolved(key, sent_firing=False)
    assert await live.abandoned() == []  # it fires yet, as far as anyone knows
    await asyncio.sleep(0.3)  # its claim was not renewed
    # Firing again, the live one takes the alert over: the fleet was told it fires.
    assert not await live.firing(key, _told("live"))
    assert await live.resolved(key, sent_firing=False)  # and it sends the resolve
    assert await live.abandoned() == []
    assert await live.firing(key, _told("live"))  # a new transition, told


async def test_the_resolve_of_an_abandoned_alert_is_won_once(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    client, prefix = shared_redis
    dead = FleetClaims(client, "dead", prefix=prefix, ttl_seconds=0.2)
    others = [FleetClaims(client, f"live-{n}", prefix=prefix, ttl_seconds=0.2) for n in range(3)]
    key = dead.key("deep", {"queue": "q1"})
    told = ToldAlert("deep", "critical", "too deep", {"queue": "q1"}, datetime.now(UTC), "dead")
    assert await dead.firing(key, told)
    await asyncio.sleep(0.3)
    assert await others[0].abandoned(skip={key}) == []  # it may fire it: leaves it alone
    won = await asyncio.gather(*(live.abandoned() for live in others))
    assert sorted(map(len, won)) == [0, 0, 1]
    assert [alert for alerts in won for alert in alerts] == [told]
    assert await client.exists(f"{prefix}told") == 0  # nothing left behind


@dataclass
class RedisProxy:
    """A TCP proxy to the real Redis that a test cuts (connections dropped, none taken)."""

    port: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers |= {writer, up_writer}

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def test_a_firing_after_a_resolve_sent_without_redis_is_told(
    shared_redis: tuple[aioredis.Redis, str],
) -> None:
    """The resolve went out unclaimed (Redis unreachable), so the firing's record outlived
    it: the next firing is told all the same, not taken for one the fleet still hears."""
    client, prefix = shared_redis
    proxy = RedisProxy()
    await proxy.start()
    through = aioredis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=2,
                             socket_connect_timeout=0.5)  # fmt: skip
    claims = FleetClaims(through, "replica-a", prefix=prefix, ttl_seconds=30)
    key = claims.key("deep", {})
    try:
        assert await claims.firing(key, _told("replica-a"))
        await proxy.cut()
        assert await claims.resolved(key, sent_firing=True)  # sent anyway
        await proxy.start()
        assert await claims.firing(key, _told("replica-a"))  # the fleet heard the resolve
        assert await claims.resolved(key, sent_firing=True)
        assert await client.exists(f"{prefix}told") == 0
    finally:
        await through.aclose()
        await proxy.cut()


async def test_a_live_replica_that_fires_an_abandoned_alert_takes_it_over(
    receiver: Receiver, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    """One firing, one resolve: the replica that fired is gone when the other fires."""
    client, prefix = shared_redis
    receiver.received.clear()
    rules = [{"name": "deep", "kind": "gauge", "metric": "test_depth", "threshold": 10}]
    settings = _settings(receiver, prefix, rules)
    replicas, gauges = _gauge_replicas(settings, client, ttl_seconds=0.3)
    a, b = replicas
    try:
        gauges[0].set(50)
        await a.step()  # fires, then dies (no more steps)
        await asyncio.sleep(0.4)
        gauges[1].set(50)
        await b.step()  # fires: takes the alert over, told already
        await asyncio.sleep(0.4)
        await b.step()  # its own claim is kept: nothing abandoned
        gauges[1].set(0)
        await b.step()
        assert [body["state"] for body in receiver.received] == ["firing", "resolved"]
        [firing] = [d for d in b.notifications.deliveries if d.state == "firing"]
        assert firing.by_another_replica
    finally:
        for replica in replicas:
            await replica.notifications.close()


# A replica process: one gauge rule firing from the start, claims kept every 50 ms.
_REPLICA = """
import asyncio, json, sys
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge
from atrium.core.netguard import NetworkPolicy
from atrium.observability.alerts import build_alert_service
from atrium.observability.config import AlertSettings

async def main():
    registry = CollectorRegistry()
    Gauge("test_depth", "A queue's depth.", registry=registry).set(50)
    service = build_alert_service(
        AlertSettings.model_validate(json.loads(sys.argv[1])), registry, bus=None,
        policy=NetworkPolicy(allow_private=True), redis=aioredis.Redis.from_url(sys.argv[2]),
        replica="replica-a",
    )
    await service.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_resolve_is_sent_by_a_live_replica_when_the_one_firing_is_killed(
    receiver: Receiver, shared_redis: tuple[aioredis.Redis, str]
) -> None:
    """Replica A alone sees the rule firing (its own registry) and is killed with SIGKILL;
    replica B, which never fired it, sends the resolve once A's claim has expired."""
    client, prefix = shared_redis
    receiver.received.clear()
    rules = [{"name": "deep", "kind": "gauge", "metric": "test_depth", "threshold": 10,
              "severity": "critical", "summary": "the queue is too deep"}]  # fmt: skip
    settings = _settings(receiver, prefix, rules).model_copy(update={"claim_ttl_seconds": 0.5})
    registry = CollectorRegistry()
    Gauge("test_depth", "A queue's depth.", registry=registry).set(0)
    announced: list[Event] = []
    policy = NetworkPolicy(allow_private=True)
    b = build_alert_service(settings, registry, bus=None, policy=policy, redis=client,
                            publish=announced.append, replica="replica-b")  # fmt: skip
    assert b is not None
    a = subprocess.Popen(  # noqa: ASYNC220 (started once, waited on below)
        [sys.executable, "-c", _REPLICA, settings.model_dump_json(), REDIS_URL],
        start_new_session=True,
    )
    await b.start()
    try:
        await until("A's firing", lambda: len(receiver.received) == 1, seconds=30)
        await asyncio.sleep(1.5)  # three of A's TTLs: A keeps its claim, B resolves nothing
        assert [body["state"] for body in receiver.received] == ["firing"]
        told = await client.hget(
            f"{settings.redis_prefix}told", claim_key(settings.redis_prefix, "deep", {})
        )
        assert told is not None
        assert ToldAlert.loads(told).replica == "replica-a"
        os.killpg(a.pid, signal.SIGKILL)  # no cleanup of any kind
        await until("the resolve", lambda: len(receiver.received) == 2)
        await until("its delivery recorded", lambda: len(b.notifications.deliveries) == 1)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        await b.close()
    resolved = receiver.received[1]
    assert resolved["state"] == "resolved"
    assert (resolved["rule"], resolved["severity"]) == ("deep", "critical")
    assert resolved["summary"] == "the queue is too deep"
    assert resolved["since"] >= receiver.received[0]["since"]
    [delivery] = b.notifications.deliveries
    assert (delivery.state, delivery.ok, delivery.by_another_replica) == ("resolved", True, False)
    assert [(e.type, getattr(e, "rule", None)) for e in announced] == [("alert.resolved", "deep")]
    [shown] = b.engine.snapshot()["resolved"]
    assert shown["replica"] == "replica-b"
    assert shown["fired_at"] is not None
    assert await client.exists(f"{settings.redis_prefix}told") == 0


async def test_unreachable_redis_sends_anyway_and_logs_it(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    receiver.received.clear()
    rules = [{"name": "deep", "kind": "gauge", "metric": "test_depth", "threshold": 10}]
    settings = _settings(receiver, "atrium-test:unreachable:", rules)
    replicas, gauges = _gauge_replicas(settings, client, ttl_seconds=30)
    for gauge in gauges:
        gauge.set(50)
    try:
        with caplog.at_level(logging.WARNING, logger="atrium.alerts"):
            for replica in replicas:
                await replica.step()
        assert [body["state"] for body in receiver.received] == ["firing", "firing"]
        assert "sending it anyway" in caplog.text
    finally:
        for replica in replicas:
            await replica.notifications.close()
        await client.aclose()
