"""Triggers that start runs without an API call: cron schedules, signed webhooks, bus events.

Every trigger runs its workflow as the key that created it. Runs started by a trigger get
ids derived from what fired them (the schedule tick, the webhook signature, the event
id), so a tick claimed twice, a webhook delivered twice or an event redelivered starts
one run, not two.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from atrium.bus import EventBus
from atrium.bus.base import Event, Subscription
from atrium.bus.events import EVENT_TYPES, WorkflowRunFinished
from atrium.core.errors import AuthenticationError, InvalidRequestError, NotFoundError
from atrium.store.secrets import SecretStore
from atrium.store.workflows import TriggerRecord, WorkflowRepository
from atrium.workflows.engine import WorkflowEngine
from atrium.workflows.expressions import check_expression, evaluate, truthy
from atrium.workflows.records import NewRun

log = logging.getLogger("atrium.workflows")

SIGNATURE_HEADER = "x-atrium-signature"
TIMESTAMP_HEADER = "x-atrium-timestamp"
SIGNATURE_TOLERANCE_SECONDS = 300
_EVENT_GROUP = "atrium-workflow-triggers"
#: Runs a chain of event triggers may start one after another (a loop stops there).
MAX_CHAIN_DEPTH = 8
_CHAINED_RUN = re.compile(r"^run_evt(\d+)_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _expressions(value: dict[str, str]) -> dict[str, str]:
    for name, source in value.items():
        problem = check_expression(source)
        if problem is not None:
            msg = f"inputs_from.{name}: invalid JMESPath expression: {problem}"
            raise ValueError(msg)
    return value


class ScheduleTrigger(_Strict):
    """Run on a cron schedule (five fields, in ``timezone``)."""

    kind: Literal["schedule"] = "schedule"
    cron: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            msg = f"invalid cron expression {value!r} (five fields: minute hour day month weekday)"
            raise ValueError(msg)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r}"
            raise ValueError(msg) from None
        return value

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (UTC)."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        tick: datetime = croniter(self.cron, local).get_next(datetime)
        return tick.astimezone(UTC)


class WebhookTrigger(_Strict):
    """Run when a signed POST arrives: HMAC-SHA256 with a stored secret."""

    kind: Literal["webhook"] = "webhook"
    secret: str = Field(description="Name of the stored secret the sender signs with.")
    inputs_from: dict[str, str] = Field(
        default_factory=dict,
        description="Input name -> JMESPath over the JSON body (empty: the body is the inputs).",
    )

    @field_validator("inputs_from")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return _expressions(value)


class EventTrigger(_Strict):
    """Run when an event of ``event_type`` is published on the bus (and matches ``filter``)."""

    kind: Literal["event"] = "event"
    event_type: str
    filter: str | None = Field(None, description="JMESPath over the event; runs when truthy.")
    inputs_from: dict[str, str] = Field(default_factory=dict)

    @field_validator("event_type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            msg = f"unknown event type {value!r} (known: {', '.join(sorted(EVENT_TYPES))})"
            raise ValueError(msg)
        return value

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None:
            _expressions({"filter": value})
        return value

    @field_validator("inputs_from")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        return _expressions(value)


TriggerSpec = Annotated[
    ScheduleTrigger | WebhookTrigger | EventTrigger, Field(discriminator="kind")
]
_SPEC = TypeAdapter(TriggerSpec)


def parse_trigger(data: Any) -> ScheduleTrigger | WebhookTrigger | EventTrigger:
    """A trigger spec from JSON; every problem in one 400."""
    try:
        return _SPEC.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'trigger'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequestError(f"invalid trigger: {problems}", param="trigger") from None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a webhook sender puts in ``X-Atrium-Signature``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class TriggerService:
    """Creates triggers and fires them: a schedule loop, webhook deliveries, bus events."""

    def __init__(
        self,
        repo: WorkflowRepository,
        engine: WorkflowEngine,
        secrets: SecretStore,
        bus: EventBus,
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        self._repo = repo
        self._engine = engine
        self._secrets = secrets
        self._bus = bus
        self._poll = poll_seconds
        self._subscriptions: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    async def create(self, workflow: str, data: Any, key_id: str) -> TriggerRecord:
        """Add a trigger that runs ``workflow``'s published version as ``key_id``."""
        spec = parse_trigger(data)
        await self._repo.resolve(workflow, None)  # 404 unless there is a published version
        if isinstance(spec, WebhookTrigger):
            await self._secrets.get(spec.secret)  # 404 naming the secret when it is missing
        first = spec.next_after(datetime.now(UTC)) if isinstance(spec, ScheduleTrigger) else None
        config = {**spec.model_dump(mode="json"), "key_id": key_id}
        record = await self._repo.create_trigger(workflow, spec.kind, config, True, first)
        if isinstance(spec, EventTrigger):
            await self._subscribe(spec.event_type)
        return record

    async def of_workflow(self, workflow: str | None) -> list[TriggerRecord]:
        """Triggers (of one workflow, or all)."""
        return await self._repo.list_triggers(workflow, None)

    async def delete(self, trigger_id: str) -> None:
        """Remove a trigger (its event subscription stays until restart, matching nothing)."""
        await self._repo.delete_trigger(trigger_id)

    async def start(self) -> None:
        """Subscribe to the event types triggers use; start the schedule loop."""
        for trigger in await self._repo.list_triggers(None, "event"):
            await self._subscribe(str(trigger.config["event_type"]))
        self._task = asyncio.create_task(self._schedule_loop())

    async def close(self) -> None:
        """Stop the loop and the subscriptions."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()

    # -- schedules -------------------------------------------------------------------------

    async def fire_due(self, now: datetime | None = None) -> list[str]:
        """Start a run for every schedule whose tick has come (claimed: once per tick)."""
        now = now or datetime.now(UTC)
        started: list[str] = []
        for trigger in await self._repo.due_schedules(now):
            spec = parse_trigger({k: v for k, v in trigger.config.items() if k != "key_id"})
            assert isinstance(spec, ScheduleTrigger)
            tick = trigger.next_fire_at
            assert tick is not None
            if not await self._repo.claim_due_schedule(trigger.id, tick, spec.next_after(now)):
                continue  # another replica fired this tick
            run_id = f"run_sched_{trigger.id}_{int(tick.timestamp())}"
            started.append(await self._start(trigger, run_id, spec.inputs, "schedule"))
        return started

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception:
                log.exception("firing workflow schedules failed")
            await asyncio.sleep(self._poll)

    # -- webhooks --------------------------------------------------------------------------

    async def deliver(self, trigger_id: str, body: bytes, headers: dict[str, str]) -> str:
        """A webhook delivery: verify its signature, start (or find) its run."""
        trigger = await self._repo.get_trigger(trigger_id)
        if trigger.kind != "webhook" or not trigger.enabled:
            msg = f"no webhook {trigger_id!r}"
            raise NotFoundError(msg)
        spec = parse_trigger({k: v for k, v in trigger.config.items() if k != "key_id"})
        assert isinstance(spec, WebhookTrigger)
        signature = headers.get(SIGNATURE_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        await self._verify(spec.secret, timestamp, signature, body)
        payload = _json(body)
        inputs = _mapped(spec.inputs_from, payload) if spec.inputs_from else payload
        if not isinstance(inputs, dict):
            msg = "the webhook body must be a JSON object (or map one with inputs_from)"
            raise InvalidRequestError(msg)
        digest = hashlib.sha256(f"{trigger_id}:{signature}".encode()).hexdigest()[:32]
        return await self._start(trigger, f"run_hook_{digest}", inputs, "webhook")

    async def _verify(self, secret_name: str, timestamp: str, signature: str, body: bytes) -> None:
        try:
            sent = int(timestamp)
        except ValueError:
            msg = f"missing or invalid {TIMESTAMP_HEADER} header"
            raise AuthenticationError(msg, code="invalid_signature") from None
        if abs(time.time() - sent) > SIGNATURE_TOLERANCE_SECONDS:
            msg = "the webhook timestamp is too old or in the future"
            raise AuthenticationError(msg, code="invalid_signature")
        expected = sign(await self._secrets.get(secret_name), timestamp, body)
        if not hmac.compare_digest(expected, signature):
            msg = "the webhook signature does not match"
            raise AuthenticationError(msg, code="invalid_signature")

    # -- events ----------------------------------------------------------------------------

    async def _subscribe(self, event_type: str) -> None:
        if any(getattr(s, "atrium_event_type", None) == event_type for s in self._subscriptions):
            return
        cls = EVENT_TYPES[event_type]

        async def handle(event: Event) -> None:
            await self.on_event(event)

        # Not wrapped in ``once_per_event``: a run's id is made from the event's id, and
        # submitting a run id again starts nothing new (the store and DBOS keep the first).
        subscription = await self._bus.subscribe(cls, _EVENT_GROUP, "triggers", handle)
        subscription.atrium_event_type = event_type  # type: ignore[attr-defined]
        self._subscriptions.append(subscription)

    async def on_event(self, event: Event) -> list[str]:
        """Start a run for every event trigger the event matches."""
        data = {**event.model_dump(mode="json"), "type": event.type}
        depth = _chain_depth(event) + 1
        if depth > MAX_CHAIN_DEPTH:
            log.warning(
                "event %s not acted on: %d workflow runs chained already", event.id, depth - 1
            )
            return []
        started = []
        for trigger in await self._repo.list_triggers(None, "event"):
            config = trigger.config
            if not trigger.enabled or config.get("event_type") != event.type:
                continue
            spec = parse_trigger({k: v for k, v in config.items() if k != "key_id"})
            assert isinstance(spec, EventTrigger)
            if spec.filter is not None and not truthy(evaluate(spec.filter, data)):
                continue
            inputs = _mapped(spec.inputs_from, data)
            run_id = f"run_evt{depth}_{trigger.id}_{event.id}"
            started.append(await self._start(trigger, run_id, inputs, "event"))
        return started

    async def _start(
        self, trigger: TriggerRecord, run_id: str, inputs: dict[str, Any], kind: str
    ) -> str:
        version = await self._repo.resolve(trigger.workflow_id, None)
        key_id = str(trigger.config["key_id"])
        await self._engine.submit(NewRun(run_id, version, inputs, key_id, kind))
        return run_id


def _chain_depth(event: Event) -> int:
    """How many event-started runs led to this event (0 unless a run's end fired it)."""
    if not isinstance(event, WorkflowRunFinished):
        return 0
    match = _CHAINED_RUN.match(event.run_id)
    return int(match.group(1)) if match else 0


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the webhook body is not JSON: {exc}") from None


def _mapped(mapping: dict[str, str], data: Any) -> dict[str, Any]:
    return {name: evaluate(source, data) for name, source in mapping.items()}
