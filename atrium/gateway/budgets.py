"""USD budgets per key and team over a period, charged as requests finish.

A request is admitted while its key's and team's spend is under budget, and its
cost is added atomically when it finishes, so concurrent requests can overspend
by at most what is in flight when the budget is crossed. The ledger starts from
the usage table (what earlier processes charged) the first time it sees a
subject in a period. At start every stored budget is read once (``stored_budgets``,
``SpendLedger.observe``) so the spend gauge describes each key and team from the
start, not from its first request in this process.
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
from atrium.store.keys import ApiKey, ApiKeyRepository
from atrium.store.teams import Team, TeamRepository

log = logging.getLogger("atrium.gateway.budgets")

#: Spend so far in a period: (subject id, first day of the period or None) -> USD.
SpendSince = Callable[[str, date | None], Awaitable[float]]
#: Told each budget's spend in its current period when it is read or charged (metrics).
OnSpend = Callable[["Budget", float], None]


def _ignore(_: Budget, __: float) -> None:
    return None


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


def key_budget(key: ApiKey) -> Budget | None:
    """The key's own budget, if it has one."""
    if key.budget_usd is None or key.budget_period is None:
        return None
    return Budget(f"key:{key.id}", f"key {key.name!r}", key.budget_usd, key.budget_period)


def team_budget(team: Team) -> Budget | None:
    """The team's budget, if it has one."""
    if team.budget_usd is None or team.budget_period is None:
        return None
    return Budget(f"team:{team.id}", f"team {team.name!r}", team.budget_usd, team.budget_period)


def budgets_of(key: ApiKey) -> tuple[Budget, ...]:
    """What a request with ``key`` counts against: the key's and its team's budgets."""
    found = (key_budget(key), team_budget(key.team) if key.team is not None else None)
    return tuple(b for b in found if b is not None)


async def stored_budgets(keys: ApiKeyRepository, teams: TeamRepository) -> list[Budget]:
    """Every budget in the store: of keys not revoked, and of teams."""
    found = [key_budget(k) for k in await keys.list(include_revoked=False)]
    found += [team_budget(t) for t in await teams.list()]
    return [b for b in found if b is not None]


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

    async def observe(self, budgets: Sequence[Budget]) -> None:
        """Report each budget's spend in its period (to ``on_spend``) without refusing."""


class InProcessSpendLedger:
    """Spend in this process's memory, seeded from the usage table."""

    def __init__(
        self,
        spend_since: SpendSince,
        clock: Callable[[], datetime] | None = None,
        *,
        on_spend: OnSpend = _ignore,
    ) -> None:
        self._spend_since = spend_since
        self._clock = clock or (lambda: datetime.now(UTC))
        self._spent: dict[tuple[str, str], float] = {}
        self._on_spend = on_spend

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
            self._on_spend(budget, spent)
            if spent >= budget.limit_usd:
                raise _exceeded(budget, spent)

    async def charge(self, budgets: Sequence[Budget], cost_usd: float) -> None:
        """Add the cost to every budget's period."""
        for budget in budgets:
            slot, spent = await self._spent_in(budget)
            self._spent[slot] = spent + cost_usd
            self._on_spend(budget, spent + cost_usd)

    async def observe(self, budgets: Sequence[Budget]) -> None:
        """Report each budget's spend in its period without refusing."""
        for budget in budgets:
            _, spent = await self._spent_in(budget)
            self._on_spend(budget, spent)


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
        on_spend: OnSpend = _ignore,
    ) -> None:
        self._redis = redis
        self._spend_since = spend_since
        self._prefix = prefix
        self._clock = clock or (lambda: datetime.now(UTC))
        self._on_spend = on_spend

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
                self._on_spend(budget, spent)
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
                spent = await self._redis.incrbyfloat(await self._key(budget), cost_usd)
                self._on_spend(budget, float(spent))
        except RedisError as exc:
            log.exception("budgets: Redis failed charging $%.6f (%s)", cost_usd, type(exc).__name__)

    async def observe(self, budgets: Sequence[Budget]) -> None:
        """Report each budget's spend in its period; a Redis failure is logged, not raised."""
        try:
            for budget in budgets:
                spent = float(await self._redis.get(await self._key(budget)) or 0.0)
                self._on_spend(budget, spent)
        except RedisError as exc:
            log.warning("budgets: Redis failed reading spend (%s)", type(exc).__name__)


def _ttl(period: str) -> int | None:
    """Day and month counters outlive their period a little; all-time ones never expire."""
    return {"day": 2 * 86_400, "month": 32 * 86_400}.get(period)


def _exceeded(budget: Budget, spent: float) -> BudgetExceededError:
    span = {"day": "daily", "month": "monthly", "total": "total"}[budget.period]
    msg = f"{budget.label} has spent ${spent:.4f} of its ${budget.limit_usd:.2f} {span} budget"
    return BudgetExceededError(msg)
