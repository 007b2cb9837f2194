"""The Notify block: a message to a webhook, a Slack channel, or by e-mail.

Webhooks and Slack incoming webhooks are called through the SSRF guard
(:func:`atrium.core.netguard.guarded_client`), without following redirects (a POST body
is not re-sent to wherever a redirect points). A URL taken from a secret (``url_secret``:
Slack's hook URLs carry their token in the path) never appears in an error message.

E-mail goes through the platform's SMTP server, ``BlockServices.smtp``: ``host``,
``port`` (default 25, or 465 with ``ssl``), ``username``, ``password_secret`` (a secret's
name), ``starttls`` (default false), ``ssl`` (implicit TLS, default false),
``from_address``, ``timeout_seconds`` (default 30). That server is the administrator's
choice, not the workflow author's, so it is not subject to the network policy.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Final, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from atrium.core.netguard import BlockedDestinationError, guarded_client
from atrium.store.secrets import NAME_PATTERN
from atrium.workflows.blocks._shared import (
    EMAIL_ADDRESS,
    checked_template,
    clip,
    decode_body,
    one_line,
    port_scope,
    read_limited,
    reveal_all,
    safe_location,
)
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError, BlockResult
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import render

Channel = Literal["webhook", "slack", "email"]
_EXCERPT_CHARS: Final = 300
_MAX_ERROR_BODY: Final = 64 * 1024


class NotifyConfig(BlockConfig):
    """Where the message goes, and what it says."""

    channel: Channel = Field(description="webhook (JSON POST), slack (incoming webhook), email.")
    url: str | None = Field(None, max_length=8192, description="The webhook or Slack hook URL.")
    url_secret: str | None = Field(
        None, description="Instead of url: the name of a secret that holds the URL."
    )
    message: str = Field(min_length=1, description="The message (a template).")
    subject: str = Field(
        "Atrium workflow notification", description="The e-mail subject (a template)."
    )
    to: list[str] = Field(default_factory=list, max_length=100, description="E-mail recipients.")
    from_address: str | None = Field(
        None, description="The e-mail sender (default: the platform's SMTP from_address)."
    )
    timeout_seconds: float = Field(15.0, gt=0, le=300, description="Timeout of the delivery.")

    @field_validator("message", "subject")
    @classmethod
    def _templates(cls, value: str) -> str:
        checked_template(value)
        return value

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        for address in value:
            _check_address(address)
        return value

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @field_validator("url_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.fullmatch(value):
            msg = f"{value!r} is not a secret name (1-100 of A-Z a-z 0-9 _ . -)"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _destination(self) -> NotifyConfig:
        if self.channel == "email":
            if not self.to:
                msg = "an email notification needs at least one address in 'to'"
                raise ValueError(msg)
            if self.url is not None or self.url_secret is not None:
                msg = "an email notification takes no url or url_secret"
                raise ValueError(msg)
        elif (self.url is None) == (self.url_secret is None):
            msg = f"a {self.channel} notification needs exactly one of url and url_secret"
            raise ValueError(msg)
        return self


def _check_address(address: str) -> str:
    if not EMAIL_ADDRESS.match(address):
        msg = f"{address!r} is not a plain e-mail address"
        raise ValueError(msg)
    return address


# -- webhooks -------------------------------------------------------------------------


def webhook_payload(ctx: BlockContext, config: NotifyConfig, message: str, data: Any) -> Any:
    """The JSON body: Slack's ``{"text"}``, or a generic webhook's text, run, node and data."""
    if config.channel == "slack":
        return {"text": message}
    return {"text": message, "run_id": ctx.run_id, "node_id": ctx.node_id, "data": data}


async def _webhook_url(ctx: BlockContext, config: NotifyConfig) -> tuple[str, str]:
    """The URL, and how to name it in a message (never a secret URL itself)."""
    if config.url_secret is not None:
        secret = await reveal_all(ctx.services.secrets, {"url": config.url_secret})
        return secret[
            "url"
        ].strip(), f"the {config.channel} webhook in secret {config.url_secret!r}"
    assert config.url is not None
    try:
        where = safe_location(httpx.URL(config.url))
    except httpx.InvalidURL as exc:
        msg = f"invalid URL: {exc}"
        raise BlockError(msg) from None
    return config.url, where


async def post_webhook(ctx: BlockContext, config: NotifyConfig, payload: Any) -> None:
    """POST the payload; BlockError on a refused destination, a failure or a non-2xx status."""
    url, where = await _webhook_url(ctx, config)
    client = guarded_client(
        ctx.services.network_policy, timeout=config.timeout_seconds, follow_redirects=False
    )
    try:
        headers = {"Idempotency-Key": ctx.idempotency_key}
        async with client, client.stream("POST", url, json=payload, headers=headers) as response:
            if 200 <= response.status_code < 300:
                return
            body = await read_limited(response, _MAX_ERROR_BODY)
            excerpt = clip(decode_body(body, response.encoding).strip(), _EXCERPT_CHARS)
            msg = f"{where} answered {response.status_code}: {excerpt}"
            raise BlockError(msg)
    except BlockedDestinationError as exc:
        raise BlockError(exc.message) from None
    except httpx.TimeoutException:
        msg = f"{where}: no answer within {config.timeout_seconds:g} s"
        raise BlockError(msg) from None
    except httpx.InvalidURL:
        raise BlockError(f"{where}: invalid URL") from None
    except httpx.HTTPError as exc:
        # httpx's messages can quote the URL: for a secret one, name the kind of error only.
        detail = type(exc).__name__ if config.url_secret else str(exc) or type(exc).__name__
        raise BlockError(f"{where}: {detail}") from None


# -- e-mail ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The platform's SMTP server (from ``BlockServices.smtp``)."""

    host: str
    port: int
    username: str | None
    password_secret: str | None
    starttls: bool
    ssl: bool
    from_address: str | None
    timeout_seconds: float

    @classmethod
    def from_mapping(cls, smtp: Mapping[str, Any]) -> SmtpSettings:
        """Settings from the mapping; BlockError when no host is configured."""
        host = smtp.get("host")
        if not host:
            msg = "e-mail is not configured on this platform (no SMTP host)"
            raise BlockError(msg)
        implicit_tls = bool(smtp.get("ssl", False))
        return cls(
            host=str(host),
            port=int(smtp.get("port") or (465 if implicit_tls else 25)),
            username=smtp.get("username") or None,
            password_secret=smtp.get("password_secret") or None,
            starttls=bool(smtp.get("starttls", False)),
            ssl=implicit_tls,
            from_address=smtp.get("from_address") or None,
            timeout_seconds=float(smtp.get("timeout_seconds") or 30.0),
        )


def email_message(config: NotifyConfig, sender: str, subject: str, text: str) -> EmailMessage:
    """A plain-text message (header values are single lines: no header injection)."""
    message = EmailMessage()
    message["Subject"] = one_line(subject)
    message["From"] = sender
    message["To"] = ", ".join(config.to)
    message.set_content(text)
    return message


def _deliver(smtp: SmtpSettings, password: str | None, message: EmailMessage) -> list[str]:
    """Send over SMTP (blocking: run in a thread); the addresses the server refused."""
    connection: type[smtplib.SMTP] = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
    with connection(smtp.host, smtp.port, timeout=smtp.timeout_seconds) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username and password is not None:
            client.login(smtp.username, password)
        refused = client.send_message(message)
    return sorted(refused)


async def send_email(ctx: BlockContext, config: NotifyConfig, subject: str, text: str) -> list[str]:
    """Send the message; the recipients refused (BlockError when all are, or on failure)."""
    smtp = SmtpSettings.from_mapping(ctx.services.smtp)
    sender = config.from_address or smtp.from_address
    if sender is None:
        msg = "no sender: set from_address on the block or the platform's SMTP settings"
        raise BlockError(msg)
    password = None
    if smtp.password_secret is not None:
        password = (await reveal_all(ctx.services.secrets, {"p": smtp.password_secret}))["p"]
    message = email_message(config, sender, subject, text)
    try:
        return await asyncio.to_thread(_deliver, smtp, password, message)
    except (smtplib.SMTPException, OSError) as exc:
        msg = f"sending e-mail through {smtp.host}:{smtp.port} failed: {exc}"
        raise BlockError(msg) from None


# -- the block ------------------------------------------------------------------------


class NotifyBlock(Block):
    """Tell someone: a webhook, a Slack channel or e-mail recipients."""

    type = "notify"
    title = "Notify"
    description = "Send a message to a webhook, a Slack channel or by e-mail."
    category = "integration"
    Config = NotifyConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "data": PortSpec(
                type="any", required=False, description="For the templates; sent to webhooks."
            )
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "delivered": PortSpec(type="boolean"),
            "channel": PortSpec(type="string"),
            "refused": PortSpec(
                type="array[string]", description="E-mail recipients the server refused."
            ),
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, NotifyConfig)
        scope = port_scope(ctx, self.inputs(config), inputs)
        message = render(config.message, scope)
        refused: list[str] = []
        if config.channel == "email":
            refused = await send_email(ctx, config, render(config.subject, scope), message)
        else:
            payload = webhook_payload(ctx, config, message, inputs.get("data"))
            await post_webhook(ctx, config, payload)
        outputs = {"delivered": True, "channel": config.channel, "refused": refused}
        return BlockResult(outputs)


__all__ = ["NotifyBlock", "NotifyConfig", "SmtpSettings", "webhook_payload"]
