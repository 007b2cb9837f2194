"""The Redis spend ledger on real Redis: shared, atomic, seeded once, failing closed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import date

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from atrium.core.errors import LimiterUnavailableError
from atrium.gateway.budgets import Budget, BudgetExceededError, RedisSpendLedger

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _spent_before(subject: str, first_day: date | None) -> float:
    return 1.0


@pytest_asyncio.fixture
async def ledgers() -> AsyncIterator[list[RedisSpendLedger]]:
    prefix = f"atrium-test-spend-{secrets.token_hex(4)}:"
    clients = [aioredis.Redis.from_url(REDIS_URL) for _ in range(2)]
    yield [RedisSpendLedger(c, _spent_before, prefix=prefix) for c in clients]
    keys = [k async for k in clients[0].scan_iter(match=f"{prefix}*")]
    if keys:
        await clients[0].delete(*keys)
    for client in clients:
        await client.aclose()


async def test_replicas_charge_one_shared_total(ledgers: list[RedisSpendLedger]) -> None:
    budget = Budget("team:t1", "team 'quants'", 2.0, "month")
    await ledgers[0].check([budget])
    charges = [ledgers[i % 2].charge([budget], 0.01) for i in range(100)]
    await asyncio.gather(*charges)
    with pytest.raises(BudgetExceededError, match=r"spent \$2\.0000"):
        await ledgers[1].check([budget])


async def test_a_budget_not_yet_spent_admits(ledgers: list[RedisSpendLedger]) -> None:
    budget = Budget("key:k1", "key 'bot'", 5.0, "day")
    await ledgers[0].charge([budget], 3.0)  # on top of the 1.0 recorded before
    await ledgers[1].check([budget])
    await ledgers[1].charge([budget], 1.0)
    with pytest.raises(BudgetExceededError):
        await ledgers[0].check([budget])


async def test_budgets_fail_closed_without_redis() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        ledger = RedisSpendLedger(dead, _spent_before)
        with pytest.raises(LimiterUnavailableError) as refused:
            await ledger.check([Budget("key:k", "key 'k'", 1.0, "day")])
        assert refused.value.status == 503
        await ledger.charge([Budget("key:k", "key 'k'", 1.0, "day")], 0.5)  # logged, not raised
    finally:
        await dead.aclose()


async def test_observing_reports_the_shared_spend_and_never_refuses() -> None:
    prefix = f"atrium-test-spend-{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(REDIS_URL)
    seen: dict[str, float] = {}

    def on_spend(budget: Budget, usd: float) -> None:
        seen[budget.subject] = usd

    charging = RedisSpendLedger(client, _spent_before, prefix=prefix)
    observer = RedisSpendLedger(client, _spent_before, prefix=prefix, on_spend=on_spend)
    spent, fresh = (
        Budget("key:k2", "key 'a'", 1.0, "day"),
        Budget("team:t2", "team 'b'", 4.0, "day"),
    )
    try:
        await charging.charge([spent], 0.5)  # 1.0 before, so over its 1.0 budget
        await observer.observe([spent, fresh])  # no BudgetExceededError
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    assert seen == {"key:k2": 1.5, "team:t2": 1.0}


async def test_observing_without_redis_is_logged_not_raised() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        await RedisSpendLedger(dead, _spent_before).observe([Budget("key:k", "k", 1.0, "day")])
    finally:
        await dead.aclose()
