"""What gets an audit entry, how outcomes are named, and how an entry is hashed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from atrium.audit import audited, inference_entry, outcome_of
from atrium.bus import RequestCompleted
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
