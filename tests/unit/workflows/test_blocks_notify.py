"""The Notify block: webhooks on a real aiohttp server, e-mail to a real aiosmtpd server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from atrium.core.netguard import NetworkPolicy
from atrium.workflows.blocks.base import BlockContext, BlockError
from atrium.workflows.blocks.notify import NotifyBlock
from tests.unit.workflows.block_doubles import (
    LOOPBACK_POLICY,
    MemorySecrets,
    make_context,
    make_services,
    run_block,
)

HOOK_TOKEN = "T000/B000/hook-secret-token"


class Hooks:
    """Webhook receivers: /hook answers 200, /broken 500; every body is recorded."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)
        self.app.router.add_post(f"/services/{HOOK_TOKEN}", self.hook)
        self.app.router.add_post("/broken", self.broken)

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path, "json": await request.json()})
        return web.Response(text="ok")

    async def broken(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path, "json": await request.json()})
        return web.Response(status=500, text="invalid_payload")


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Hooks, BaseTestServer]]:
    """The receivers on a free port of 127.0.0.1."""
    target = Hooks()
    async with TestServer(target.app, host="127.0.0.1") as server:
        yield target, server


def _ctx(tmp_path: Path, policy: NetworkPolicy = LOOPBACK_POLICY, **smtp: Any) -> BlockContext:
    secrets = MemorySecrets({"smtp_password": "mail-pass"})
    return make_context(
        make_services(tmp_path, secrets=secrets, policy=policy, smtp=smtp),
        workflow_inputs={"customer": "Ada"},
    )


async def test_webhook_posts_text_run_node_and_data(
    hooks: tuple[Hooks, BaseTestServer], tmp_path: Path
) -> None:
    target, server = hooks
    config = {
        "channel": "webhook",
        "url": str(server.make_url("/hook")),
        "message": "Order for {{ inputs.customer }}: {{ data.total }} EUR",
    }
    result = await run_block(NotifyBlock(), config, _ctx(tmp_path), {"data": {"total": 12}})
    assert result.outputs == {"delivered": True, "channel": "webhook", "refused": []}
    assert target.received == [
        {
            "path": "/hook",
            "json": {
                "text": "Order for Ada: 12 EUR",
                "run_id": "run-1",
                "node_id": "node-1",
                "data": {"total": 12},
            },
        }
    ]


async def test_slack_posts_the_incoming_webhook_format_to_a_secret_url(
    hooks: tuple[Hooks, BaseTestServer], tmp_path: Path
) -> None:
    target, server = hooks
    secret_url = str(server.make_url(f"/services/{HOOK_TOKEN}"))
    ctx = make_context(
        make_services(
            tmp_path, secrets=MemorySecrets({"slack_hook": secret_url}), policy=LOOPBACK_POLICY
        )
    )
    config = {"channel": "slack", "url_secret": "slack_hook", "message": "Deploy done"}
    result = await run_block(NotifyBlock(), config, ctx)
    assert result.outputs["delivered"] is True
    assert target.received == [{"path": f"/services/{HOOK_TOKEN}", "json": {"text": "Deploy done"}}]


async def test_a_failing_webhook_is_a_block_error_that_hides_a_secret_url(
    hooks: tuple[Hooks, BaseTestServer], tmp_path: Path
) -> None:
    _, server = hooks
    broken = str(server.make_url("/broken")) + f"?token={HOOK_TOKEN}"
    secrets = MemorySecrets({"hook": broken})
    ctx = make_context(make_services(tmp_path, secrets=secrets, policy=LOOPBACK_POLICY))
    config = {"channel": "slack", "url_secret": "hook", "message": "x"}
    with pytest.raises(BlockError, match="answered 500: invalid_payload") as failure:
        await run_block(NotifyBlock(), config, ctx)
    assert "secret 'hook'" in str(failure.value)
    assert HOOK_TOKEN not in str(failure.value)
    assert "127.0.0.1" not in str(failure.value)


async def test_a_webhook_url_is_named_without_its_query(
    hooks: tuple[Hooks, BaseTestServer], tmp_path: Path
) -> None:
    _, server = hooks
    config = {
        "channel": "webhook",
        "url": str(server.make_url("/broken")) + "?sig=abc",
        "message": "x",
    }
    with pytest.raises(BlockError, match=r"http://127\.0\.0\.1:\d+/broken answered 500") as failure:
        await run_block(NotifyBlock(), config, _ctx(tmp_path))
    assert "sig=abc" not in str(failure.value)


async def test_the_default_policy_refuses_a_loopback_webhook(
    hooks: tuple[Hooks, BaseTestServer], tmp_path: Path
) -> None:
    target, server = hooks
    config = {"channel": "webhook", "url": str(server.make_url("/hook")), "message": "x"}
    with pytest.raises(BlockError, match="loopback"):
        await run_block(NotifyBlock(), config, _ctx(tmp_path, policy=NetworkPolicy()))
    assert target.received == []


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "http://169.254.169.254/hook"])
async def test_the_default_policy_refuses_internal_webhooks(url: str, tmp_path: Path) -> None:
    config = {"channel": "webhook", "url": url, "message": "x"}
    with pytest.raises(BlockError, match="refused to connect"):
        await run_block(NotifyBlock(), config, _ctx(tmp_path, policy=NetworkPolicy()))


async def test_a_missing_url_secret_fails_naming_it(tmp_path: Path) -> None:
    config = {"channel": "slack", "url_secret": "nope", "message": "x"}
    with pytest.raises(BlockError, match="no secret named 'nope'"):
        await run_block(NotifyBlock(), config, _ctx(tmp_path))


# -- e-mail -------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler keeping each message; refuses addresses at refused.test."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.test"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((envelope, message_from_bytes(envelope.content)))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"mail-pass")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 (AUTH allowed without TLS, for the test only)."""
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=inbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    """The inbox, emptied."""
    smtp_server[0].messages.clear()
    smtp_server[0].logins.clear()
    return smtp_server[0]


EMAIL = {
    "channel": "email",
    "to": ["ops@example.test", "lead@example.test"],
    "subject": "Run for {{ inputs.customer }}\nBcc: evil@example.test",
    "message": "Hello {{ inputs.customer }},\nthe report is ready: {{ data.link }}",
}


async def test_email_is_delivered_through_the_platform_smtp_server(
    smtp_server: tuple[Inbox, int], inbox: Inbox, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, host="127.0.0.1", port=smtp_server[1], from_address="atrium@example.test")
    result = await run_block(NotifyBlock(), EMAIL, ctx, {"data": {"link": "https://x.test/r"}})
    assert result.outputs == {"delivered": True, "channel": "email", "refused": []}
    [(envelope, message)] = inbox.messages
    assert envelope.mail_from == "atrium@example.test"
    assert envelope.rcpt_tos == ["ops@example.test", "lead@example.test"]
    # The newline in the rendered subject is folded away: no injected Bcc header.
    assert message["Subject"] == "Run for Ada Bcc: evil@example.test"
    assert message["Bcc"] is None
    assert message["To"] == "ops@example.test, lead@example.test"
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert body.decode().splitlines() == ["Hello Ada,", "the report is ready: https://x.test/r"]
    assert inbox.logins == []


async def test_email_logs_in_with_the_password_secret_and_reports_refusals(
    smtp_server: tuple[Inbox, int], inbox: Inbox, tmp_path: Path
) -> None:
    ctx = _ctx(
        tmp_path,
        host="127.0.0.1",
        port=smtp_server[1],
        username="atrium",
        password_secret="smtp_password",
        from_address="platform@example.test",
    )
    config = {
        **EMAIL,
        "to": ["ops@example.test", "ghost@refused.test"],
        "from_address": "me@x.test",
    }
    result = await run_block(NotifyBlock(), config, ctx, {"data": {"link": "l"}})
    assert result.outputs["refused"] == ["ghost@refused.test"]
    assert inbox.logins == [(b"atrium", b"mail-pass")]
    [(envelope, _)] = inbox.messages
    assert envelope.mail_from == "me@x.test"
    assert envelope.rcpt_tos == ["ops@example.test"]


async def test_email_to_no_accepted_recipient_fails(
    smtp_server: tuple[Inbox, int], inbox: Inbox, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, host="127.0.0.1", port=smtp_server[1], from_address="a@example.test")
    config = {**EMAIL, "to": ["ghost@refused.test"]}
    with pytest.raises(BlockError, match=r"sending e-mail through 127\.0\.0\.1"):
        await run_block(NotifyBlock(), config, ctx, {"data": {"link": "l"}})
    assert inbox.messages == []


async def test_email_fails_when_smtp_is_not_configured_or_unreachable(tmp_path: Path) -> None:
    with pytest.raises(BlockError, match="not configured"):
        await run_block(NotifyBlock(), EMAIL, _ctx(tmp_path), {"data": {"link": "l"}})
    no_sender = _ctx(tmp_path, host="127.0.0.1", port=_free_port())
    with pytest.raises(BlockError, match="no sender"):
        await run_block(NotifyBlock(), EMAIL, no_sender, {"data": {"link": "l"}})
    closed = _ctx(tmp_path, host="127.0.0.1", port=_free_port(), from_address="a@example.test")
    with pytest.raises(BlockError, match="sending e-mail through"):
        await run_block(NotifyBlock(), EMAIL, closed, {"data": {"link": "l"}})


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"channel": "webhook", "message": "x"}, "exactly one of url and url_secret"),
        ({"channel": "slack", "message": "x", "url": "http://a", "url_secret": "s"}, "exactly one"),
        ({"channel": "email", "message": "x"}, "at least one address"),
        ({"channel": "email", "message": "x", "to": ["a@b"], "url": "http://a"}, "no url"),
        ({"channel": "email", "message": "x", "to": ["not an address"]}, "plain e-mail"),
        ({"channel": "email", "message": "x", "to": ["a@b", "c@d\nBcc: e@f"]}, "plain e-mail"),
        ({"channel": "email", "message": "x", "to": ["a@b"], "from_address": "x"}, "plain e-mail"),
        ({"channel": "webhook", "message": "{{ x", "url": "http://a"}, "invalid template"),
        ({"channel": "sms", "message": "x"}, "channel"),
    ],
)
def test_notify_config_is_checked(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        NotifyBlock().parse_config(config)
