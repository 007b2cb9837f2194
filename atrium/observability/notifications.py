"""Alert notifications: generic webhooks, Slack-compatible webhooks and e-mail.

:class:`Notifications` sends each one off the evaluation loop (a task per delivery),
tries it ``attempts`` times with doubling backoff, then records it as failed. Webhook
URLs are fetched only through the SSRF guard (:func:`atrium.core.netguard.guarded_client`).
Every outcome is kept (bounded) for the admin API and counted in
``atrium_alert_notifications_total``.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from atrium.core.errors import NotFoundError
from atrium.core.netguard import BlockedDestinationError, NetworkPolicy, guarded_client
from atrium.observability.config import AlertSettings, NotifierSettings

log = logging.getLogger("atrium.alerts")


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notification says: one alert changing state."""

    rule: str
    state: str  # "firing" or "resolved"
    severity: str
    summary: str
    value: float | None
    labels: Mapping[str, str]
    since: datetime

    def to_public(self) -> dict[str, Any]:
        """The JSON body a generic webhook receives."""
        public = asdict(self)
        public["labels"] = dict(self.labels)
        public["since"] = self.since.isoformat()
        return public

    def text(self) -> str:
        """One line for chat and mail."""
        mark = "FIRING" if self.state == "firing" else "RESOLVED"
        value = "" if self.value is None else f" (value {self.value:.4g})"
        return f"[{mark}] {self.rule} ({self.severity}): {self.summary or self.rule}{value}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one notification to one notifier."""

    notifier: str
    rule: str
    state: str
    ok: bool
    attempts: int
    error: str | None
    at: datetime
    #: Another replica claimed this transition and sent it (nothing was sent from here).
    by_another_replica: bool = False

    def to_public(self) -> dict[str, Any]:
        """The JSON shape of the admin API."""
        public = asdict(self)
        public["at"] = self.at.isoformat()
        return public


class NotificationError(Exception):
    """A notifier could not deliver; ``retry`` is False when trying again cannot help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Notifier(Protocol):
    """Sends one notice somewhere; raises :class:`NotificationError` on failure."""

    name: str

    async def send(self, notice: Notice) -> None:
        """Deliver ``notice``."""


class WebhookNotifier:
    """POSTs JSON to a URL: the notice itself, or Slack's ``{"text": ...}``."""

    def __init__(self, name: str, url: str, client: httpx.AsyncClient, *, slack: bool) -> None:
        self.name = name
        self._url = url
        self._client = client
        self._slack = slack

    async def send(self, notice: Notice) -> None:
        """POST the notice; any 2xx is a delivery."""
        body = {"text": notice.text()} if self._slack else notice.to_public()
        try:
            response = await self._client.post(self._url, json=body)
        except BlockedDestinationError as exc:
            raise NotificationError(str(exc), retry=False) from None
        except httpx.HTTPError as exc:
            raise NotificationError(f"{type(exc).__name__} posting to the webhook") from None
        if not response.is_success:
            retry = response.status_code >= 500 or response.status_code == 429
            raise NotificationError(f"webhook answered {response.status_code}", retry=retry)


#: A stored secret's value by name (the secret store's ``reveal``).
RevealSecret = Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where e-mail goes (the platform's ``workflows.smtp``).

    The password is either given or named as a stored secret (``password_secret``),
    read when a mail is sent so a rotated secret takes effect without a restart.
    """

    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    password_secret: str | None = None
    starttls: bool = False
    timeout_seconds: float = 30.0


class EmailNotifier:
    """Sends a plain-text mail through the platform's SMTP server."""

    def __init__(
        self,
        name: str,
        to: list[str],
        smtp: SmtpServer | None,
        reveal: RevealSecret | None = None,
    ) -> None:
        self.name = name
        self._to = to
        self._smtp = smtp
        self._reveal = reveal

    async def send(self, notice: Notice) -> None:
        """Send the notice as a mail (in a thread: smtplib blocks)."""
        if self._smtp is None:
            raise NotificationError("e-mail is not configured (no SMTP host)", retry=False)
        message = EmailMessage()
        message["Subject"] = notice.text().replace("\r", " ").replace("\n", " ")[:200]
        message["From"] = self._smtp.sender
        message["To"] = ", ".join(self._to)
        message.set_content(f"{notice.text()}\n\nsince {notice.since.isoformat()}\n")
        password = await self._password(self._smtp)
        try:
            await asyncio.to_thread(_deliver, self._smtp, password, message)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(f"SMTP {self._smtp.host}:{self._smtp.port}: {exc}") from None

    async def _password(self, smtp: SmtpServer) -> str | None:
        if smtp.password_secret is None:
            return smtp.password
        if self._reveal is None:
            raise NotificationError("no secret store to read the SMTP password", retry=False)
        try:
            return await self._reveal(smtp.password_secret)
        except NotFoundError:
            msg = f"no secret named {smtp.password_secret!r} (the SMTP password)"
            raise NotificationError(msg, retry=False) from None


def _deliver(smtp: SmtpServer, password: str | None, message: EmailMessage) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username and password is not None:
            client.login(smtp.username, password)
        client.send_message(message)


Sleep = Callable[[float], Awaitable[None]]


class Notifications:
    """Delivers notices to notifiers in the background, with retries and a record."""

    def __init__(
        self,
        notifiers: list[Notifier],
        *,
        attempts: int,
        backoff_seconds: float,
        history: int = 200,
        on_delivery: Callable[[Delivery], None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._on_close = on_close
        self._notifiers = {n.name: n for n in notifiers}
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._on_delivery = on_delivery
        self.deliveries: deque[Delivery] = deque(maxlen=history)
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(
        self,
        notice: Notice,
        names: list[str],
        *,
        claim: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Queue ``notice`` for the named notifiers (all when ``names`` is empty).

        With ``claim`` (several replicas), the notice goes out only when the claim is
        won; otherwise each notifier records it as sent by another replica.
        """
        targets = [self._notifiers[name] for name in names or list(self._notifiers)]
        if claim is None:
            for notifier in targets:
                self._spawn(self._deliver(notifier, notice))
        else:
            self._spawn(self._claimed(notice, targets, claim))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claimed(
        self, notice: Notice, targets: list[Notifier], claim: Callable[[], Awaitable[bool]]
    ) -> None:
        if await claim():
            await asyncio.gather(*(self._deliver(notifier, notice) for notifier in targets))
            return
        log.info("alert %s %s: notified by another replica", notice.rule, notice.state)
        for notifier in targets:
            self._record(Delivery(notifier.name, notice.rule, notice.state, True, 0, None,
                                  datetime.now(UTC), by_another_replica=True))  # fmt: skip

    async def drain(self) -> None:
        """Wait for the deliveries under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel deliveries still retrying."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._on_close is not None:
            await self._on_close()

    async def _deliver(self, notifier: Notifier, notice: Notice) -> None:
        error: str | None = None
        attempt = 0
        for attempt in range(1, self._attempts + 1):
            try:
                await notifier.send(notice)
            except NotificationError as exc:
                error = str(exc)
                if not exc.retry or attempt == self._attempts:
                    break
                await self._sleep(self._backoff * 2 ** (attempt - 1))
            else:
                error = None
                break
        self._record(Delivery(notifier.name, notice.rule, notice.state, error is None,
                              attempt, error, datetime.now(UTC)))  # fmt: skip

    def _record(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        if not delivery.ok:
            log.warning("alert notification to %s failed after %d tries: %s",
                        delivery.notifier, delivery.attempts, delivery.error)  # fmt: skip


def build_notifiers(
    settings: AlertSettings,
    client: httpx.AsyncClient,
    smtp: SmtpServer | None,
    reveal: RevealSecret | None = None,
) -> list[Notifier]:
    """The notifiers the settings name, webhooks sharing one guarded client."""
    return [_notifier(spec, client, smtp, reveal) for spec in settings.notifiers]


def _notifier(
    spec: NotifierSettings,
    client: httpx.AsyncClient,
    smtp: SmtpServer | None,
    reveal: RevealSecret | None,
) -> Notifier:
    if spec.kind == "email":
        return EmailNotifier(spec.name, spec.to, smtp, reveal)
    assert spec.url is not None  # checked by the settings
    return WebhookNotifier(spec.name, spec.url, client, slack=spec.kind == "slack")


def webhook_client(settings: AlertSettings, policy: NetworkPolicy) -> httpx.AsyncClient:
    """The SSRF-guarded client webhooks are posted with."""
    return guarded_client(policy, timeout=settings.timeout_seconds, follow_redirects=False)
