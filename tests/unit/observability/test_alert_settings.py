"""Alert settings that would break the fleet's claims are refused; what a claim keeps
of a firing for its resolve reads back as written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from atrium.observability.alert_claims import ToldAlert
from atrium.observability.config import AlertSettings


def test_a_claim_ttl_that_lapses_between_two_evaluations_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 2 intervals"):
        AlertSettings.model_validate({"interval_seconds": 15, "claim_ttl_seconds": 20})
    assert (
        AlertSettings.model_validate(
            {"interval_seconds": 15, "claim_ttl_seconds": 30}
        ).claim_ttl_seconds
        == 30
    )
    assert AlertSettings().claim_ttl_seconds is None  # 4 intervals, at least 30 s


def test_a_told_alert_reads_back_as_written() -> None:
    told = ToldAlert("deep", "critical", "too deep", {"queue": "q1"},
                     datetime(2026, 11, 29, 20, 0, tzinfo=UTC), "replica-a")  # fmt: skip
    assert ToldAlert.loads(told.dumps()) == told
    assert ToldAlert.loads(told.dumps().encode()) == told
    with pytest.raises(KeyError):
        ToldAlert.loads('{"rule": "deep"}')
