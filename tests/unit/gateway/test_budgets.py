from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from atrium.gateway.budgets import Budget, BudgetExceededError, InProcessSpendLedger, period_of


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Recorded:
    """What the usage table says was spent before this process started."""

    def __init__(self, spent: float) -> None:
        self.spent = spent
        self.asked: list[tuple[str, date | None]] = []

    async def __call__(self, subject: str, first_day: date | None) -> float:
        self.asked.append((subject, first_day))
        return self.spent


def test_periods_have_ids_and_first_days() -> None:
    now = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)
    assert period_of("day", now) == ("2026-03-31", date(2026, 3, 31))
    assert period_of("month", now) == ("2026-03", date(2026, 3, 1))
    assert period_of("total", now) == ("total", None)


async def test_spend_is_seeded_from_usage_then_charged_until_the_budget_is_spent() -> None:
    recorded, clock = Recorded(4.0), Clock()
    ledger = InProcessSpendLedger(recorded, clock)
    budget = Budget("team:t1", "team 'quants'", 5.0, "month")
    await ledger.check([budget])
    assert recorded.asked == [("team:t1", date(2026, 3, 1))]
    await ledger.charge([budget], 0.6)
    await ledger.check([budget])
    await ledger.charge([budget], 0.6)
    with pytest.raises(BudgetExceededError) as refused:
        await ledger.check([budget])
    assert refused.value.status == 429
    assert refused.value.type == "insufficient_quota"
    assert "team 'quants' has spent $5.2000 of its $5.00 monthly budget" in refused.value.message
    assert len(recorded.asked) == 1  # seeded once per period


async def test_a_new_period_starts_afresh() -> None:
    recorded, clock = Recorded(0.0), Clock()
    ledger = InProcessSpendLedger(recorded, clock)
    budget = Budget("key:k1", "key 'bot'", 1.0, "day")
    await ledger.charge([budget], 2.0)
    with pytest.raises(BudgetExceededError):
        await ledger.check([budget])
    clock.now += timedelta(hours=2)  # past midnight
    await ledger.check([budget])


async def test_every_budget_must_have_room() -> None:
    ledger = InProcessSpendLedger(Recorded(0.0), Clock())
    key = Budget("key:k1", "key 'bot'", 100.0, "total")
    team = Budget("team:t1", "team 'desk'", 1.0, "total")
    await ledger.charge([key, team], 1.5)
    with pytest.raises(BudgetExceededError, match="team 'desk'"):
        await ledger.check([key, team])
    await ledger.check([key])
