"""UsageRepository reports, run identically on SQLite and real PostgreSQL."""

from __future__ import annotations

from datetime import date

from atrium.store import ApiKeyRepository, Database
from atrium.store.teams import TeamRepository
from atrium.store.usage import NO_OWNER, UsageRecord, UsageRepository

MON, TUE = date(2030, 1, 7), date(2030, 1, 8)


def _record(
    day: date, key_id: str, model: str, requests: int, team_id: str | None = None
) -> UsageRecord:
    return UsageRecord(
        day=day, key_id=key_id, team_id=team_id, model=model, requests=requests, errors=0,
        prompt_tokens=10 * requests, completion_tokens=requests, spend_usd=0.01 * requests,
    )  # fmt: skip


async def _seed(database: Database) -> tuple[UsageRepository, str, str]:
    keys = ApiKeyRepository(database)
    team = await TeamRepository(database).create(name="search")
    alice = await keys.create(name="alice-laptop", owner="user:alice", team=team)
    robot = await keys.create(name="robot")
    usage = UsageRepository(database)
    await usage.add(
        [
            _record(MON, alice.record.id, "smol", 2, team.id),
            _record(MON, robot.record.id, "smol", 5),
            _record(TUE, alice.record.id, "smol", 1, team.id),
            _record(TUE, alice.record.id, "big", 4, team.id),
        ]
    )
    return usage, alice.record.id, robot.record.id


async def test_by_user_sums_the_keys_of_each_owner(database: Database) -> None:
    usage, _, _ = await _seed(database)
    lines = {line.group: line for line in await usage.report("user")}
    assert {g: line.requests for g, line in lines.items()} == {"user:alice": 7, "": 5}
    assert lines[""].label == NO_OWNER
    assert lines["user:alice"].prompt_tokens == 70
    assert all(line.day is None for line in lines.values())


async def test_per_day_splits_each_group_by_day_oldest_first(database: Database) -> None:
    usage, alice, robot = await _seed(database)
    by_model = [
        (line.day, line.group, line.requests) for line in await usage.report("model", per_day=True)
    ]
    assert by_model == [(MON, "smol", 7), (TUE, "big", 4), (TUE, "smol", 1)]
    by_key = [
        (line.day, line.label, line.requests) for line in await usage.report("key", per_day=True)
    ]
    assert by_key == [(MON, "robot", 5), (MON, "alice-laptop", 2), (TUE, "alice-laptop", 5)]
    tuesday = await usage.report("team", start=TUE, end=TUE, per_day=True)
    assert [(line.day, line.label, line.requests) for line in tuesday] == [(TUE, "search", 5)]
    by_day = await usage.report("day", per_day=True)
    assert [(line.group, line.day, line.requests) for line in by_day] == [
        ("2030-01-07", MON, 7),
        ("2030-01-08", TUE, 5),
    ]
    assert by_day[0].to_public()["day"] == "2030-01-07"
    assert {alice, robot} == {line.group for line in await usage.report("key", end=MON)}
