"""What gets an audit entry, how outcomes are named, and how an entry is hashed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest
from starlette.types import Message, Receive, Scope, Send

from atrium.audit import audited, inference_entry, outcome_of
from atrium.audit.middleware import AuditMiddleware
from atrium.bus import RequestCompleted
from atrium.gateway.auth import KeyAuthenticator
from atrium.store.audit import GENESIS, NewAuditEntry, entry_hash


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v1/admin/keys", True),
        ("GET", "/v1/admin/secrets/db", True),
        ("GET", "/v1/audit", True),
        ("POST", "/v1/auth/login", True),
        ("DELETE", "/v1/deployments/smol", True),
        ("POST", "/v1/releases", True),
        ("PUT", "/v1/workflows/w1", True),
        ("PATCH", "/v1/knowledge-bases/kb1", True),
        ("GET", "/v1/releases", False),
        ("GET", "/v1/models", False),
        ("POST", "/v1/chat/completions", False),
        ("POST", "/v1/embeddings", False),
        ("POST", "/v1/conversations/c1/messages", False),
        ("POST", "/metrics", False),
        ("GET", "/", False),
    ],
)
def test_audited_paths(method: str, path: str, expected: bool) -> None:
    assert audited(method, path) is expected


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "success"), (204, "success"), (401, "denied"), (403, "denied"), (404, "rejected"),
     (429, "rejected"), (500, "error"), (503, "error")],
)  # fmt: skip
def test_outcome_of(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


def test_inference_entry_carries_metadata_only() -> None:
    event = RequestCompleted(
        model="smol", key_id="k1", prompt_tokens=3, completion_tokens=4, latency_ms=9.5,
        status=502, stream=False, endpoint="embeddings", team_id="t1",
    )  # fmt: skip

    entry = inference_entry(event)

    assert (entry.action, entry.target, entry.actor, entry.outcome) == (
        "inference.embeddings",
        "smol",
        "k1",
        "error",
    )
    assert entry.at == event.occurred_at
    assert entry.detail["prompt_tokens"] == 3
    assert entry.detail["team_id"] == "t1"
    assert not {"prompt", "completion", "messages", "input"} & set(entry.detail)


def _entry(**changes: object) -> NewAuditEntry:
    fields: dict[str, object] = {
        "action": "POST /v1/admin/keys", "target": "/v1/admin/keys", "outcome": "success",
        "actor": "k1", "address": "10.0.0.1", "detail": {"a": 1, "b": [1, 2]},
        "at": datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
    }  # fmt: skip
    fields.update(changes)
    return NewAuditEntry(**fields)  # type: ignore[arg-type]


def test_hash_is_canonical_and_covers_every_field() -> None:
    base = entry_hash(GENESIS, 1, "id1", _entry())
    plus_two = timezone(timedelta(hours=2))
    same_instant = _entry(at=datetime(2026, 1, 2, 5, 4, 5, 678, tzinfo=plus_two))

    assert entry_hash(GENESIS, 1, "id1", _entry(detail={"b": [1, 2], "a": 1})) == base
    assert entry_hash(GENESIS, 1, "id1", same_instant) == base
    changed = [
        entry_hash("f" * 64, 1, "id1", _entry()),
        entry_hash(GENESIS, 2, "id1", _entry()),
        entry_hash(GENESIS, 1, "id2", _entry()),
        entry_hash(GENESIS, 1, "id1", _entry(actor="k2")),
        entry_hash(GENESIS, 1, "id1", _entry(outcome="denied")),
        entry_hash(GENESIS, 1, "id1", _entry(detail={"a": 2, "b": [1, 2]})),
        entry_hash(GENESIS, 1, "id1", _entry(address=None)),
        entry_hash(GENESIS, 1, "id1", _entry(at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)


async def _recorded(method: str, path: str, query: bytes) -> NewAuditEntry:
    """The entry the audit middleware records for one anonymous request."""
    entries: list[NewAuditEntry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    # No Authorization header: the authenticator is never asked.
    middleware = AuditMiddleware(app, record=lambda e: entries.append(e) is None,
                                 auth=cast(KeyAuthenticator, None))  # fmt: skip
    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [], "client": ("10.0.0.7", 5000)}  # fmt: skip
    await middleware(scope, receive, send)
    assert len(entries) == 1
    return entries[0]


async def test_a_change_names_its_query_parameters() -> None:
    entry = await _recorded(
        "DELETE", "/v1/admin/users/u1/identities", b"issuer=https%3A%2F%2Fidp.example&subject=s-1"
    )
    assert entry.target == "/v1/admin/users/u1/identities"
    assert entry.detail["query"] == {"issuer": "https://idp.example", "subject": "s-1"}


async def test_secret_parameters_and_sign_ins_keep_no_query_values() -> None:
    change = await _recorded("POST", "/v1/admin/things", b"force=1&api_key=atr-x&token=t")
    assert change.detail["query"] == {"force": "1", "api_key": "[redacted]", "token": "[redacted]"}
    sign_in = await _recorded("GET", "/v1/auth/oidc/callback", b"code=c0de&state=s")
    assert "query" not in sign_in.detail
    read = await _recorded("GET", "/v1/admin/keys", b"limit=5")
    assert "query" not in read.detail
