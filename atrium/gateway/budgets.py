"""USD budgets per key and team over a period, charged as requests finish.

A request is admitted while its key's and team's spend is under budget, and its
cost is added atomically when it finishes, so concurrent requests can overspend
by at most what is in flight when the budget is crossed. The ledger starts from
the usage table (what earlier processes charged) the first time it sees a
subject in a period.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from atrium.core.errors import AtriumError, LimiterUnavailableError

log = logging.getLogger("atrium.gateway.budgets")

#: Spend so far in a period: (subject id, first day of the period or None) -> USD.
SpendSince = Callable[[str, date | None], Awaitable[float]]


class BudgetExceededError(AtriumError):
    """The key's or team's budget for the period is spent."""

    status = 429
    type = "insufficient_quota"
    default_code = "budget_exceeded"


@dataclass(frozen=True, slots=True)
class Budget:
    """A subject's budget: ``subject`` is ``key:<id>`` or ``team:<id>``."""

    subject: str
    label: str
    limit_usd: float
    period: str  # day, month or total


def period_of(period: str, now: datetime) -> tuple[str, date | None]:
    """The period's id and first day (None for an all-time budget)."""
    today = now.astimezone(UTC).date()
    if period == "day":
        return today.isoformat(), today
    if period == "month":
        first = today.replace(day=1)
        return first.isoformat()[:7], first
    return "total", None


class SpendLedger(Protocol):
    """Checks budgets before a request and charges costs after it."""

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Raise :class:`BudgetExceededError` if any budget is spent."""

    async def charge(self, budgets: Sequence[Budget], cost_usd: float) -> None:
        """Add a finished request's cost to each budget's period."""


class InProcessSpendLedger:
    """Spend in this process's memory, seeded from the usage table."""

    def __init__(
        self, spend_since: SpendSince, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._spend_since = spend_since
        self._clock = clock or (lambda: datetime.now(UTC))
        self._spent: dict[tuple[str, str], float] = {}

    async def _spent_in(self, budget: Budget) -> tuple[tuple[str, str], float]:
        period, first_day = period_of(budget.period, self._clock())
        slot = (budget.subject, period)
        if slot not in self._spent:
            self._spent[slot] = await self._spend_since(budget.subject, first_day)
        return slot, self._spent[slot]

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Refuse when any budget is spent."""
        for budget in budgets:
            _, spent = await self._spent_in(budget)
            if spent >= budget.limit_usd:
                raise _exceeded(budget, spent)

    async def charge(self, budgets: Sequence[Budget], cost_usd: float) -> None:
        """Add the cost to every budget's period."""
        for budget in budgets:
            slot, spent = await self._spent_in(budget)
            self._spent[slot] = spent + cost_usd


class RedisSpendLedger:
    """Spend in Redis, shared by every replica (INCRBYFLOAT is atomic).

    Budgets fail closed: when Redis cannot be reached, requests against a budget
    are refused with 503 rather than risk unbounded spend.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        spend_since: SpendSince,
        *,
        prefix: str = "atrium:spend:",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._redis = redis
        self._spend_since = spend_since
        self._prefix = prefix
        self._clock = clock or (lambda: datetime.now(UTC))

    async def _key(self, budget: Budget) -> str:
        period, first_day = period_of(budget.period, self._clock())
        key = f"{self._prefix}{{{budget.subject}}}:{period}"
        if not await self._redis.exists(key):
            seeded = await self._spend_since(budget.subject, first_day)
            # NX: another replica may have seeded (and charged) it meanwhile.
            await self._redis.set(key, repr(seeded), nx=True, ex=_ttl(budget.period))
        return key

    async def check(self, budgets: Sequence[Budget]) -> None:
        """Refuse when any budget is spent."""
        try:
            for budget in budgets:
                spent = float(await self._redis.get(await self._key(budget)) or 0.0)
                if spent >= budget.limit_usd:
                    raise _exceeded(budget, spent)
        except RedisError as exc:
            log.warning("budgets: Redis failed (%s); refusing", type(exc).__name__)
            msg = "budgets cannot be checked right now; retry shortly"
            raise LimiterUnavailableError(msg, headers={"retry-after": "1"}) from exc

    async def charge(self, budgets: Sequence[Budget], cost_usd: float) -> None:
        """Add the cost to every budget's period."""
        try:
            for budget in budgets:
                await self._redis.incrbyfloat(await self._key(budget), cost_usd)
        except RedisError as exc:
            log.exception("budgets: Redis failed charging $%.6f (%s)", cost_usd, type(exc).__name__)


def _ttl(period: str) -> int | None:
    """Day and month counters outlive their period a little; all-time ones never expire."""
    return {"day": 2 * 86_400, "month": 32 * 86_400}.get(period)


def _exceeded(budget: Budget, spent: float) -> BudgetExceededError:
    span = {"day": "daily", "month": "monthly", "total": "total"}[budget.period]
    msg = f"{budget.label} has spent ${spent:.4f} of its ${budget.limit_usd:.2f} {span} budget"
    return BudgetExceededError(msg)
