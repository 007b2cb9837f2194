"""The usage recorder sums events in memory and writes them in batches."""

from __future__ import annotations

from pathlib import Path

from atrium.bus import InProcessEventBus, RequestCompleted
from atrium.gateway.usage import UsageRecorder
from atrium.store import Database
from atrium.store.usage import UsageRepository


def _event(key: str, status: int = 200) -> RequestCompleted:
    return RequestCompleted(
        model="m",
        key_id=key,
        prompt_tokens=3,
        completion_tokens=2,
        latency_ms=1.0,
        status=status,
        stream=False,
        endpoint="chat.completions",
        cost_usd=0.001,
    )


async def test_thousands_of_events_become_a_few_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await db.migrate()
    bus = InProcessEventBus()
    await bus.start()
    usage = UsageRepository(db)
    recorder = UsageRecorder(bus, usage, flush_seconds=3600)
    await recorder.start()
    try:
        for i in range(2000):
            await recorder.record(_event(f"k{i % 2}", 500 if i % 10 == 0 else 200))
        await recorder.record(_event("k0").model_copy(update={"key_id": None}))
        await recorder.flush()
        lines = {line.group: line for line in await usage.report("key")}
        assert set(lines) == {"k0", "k1"}
        assert lines["k0"].requests == 1000
        assert lines["k0"].errors == 200
        assert lines["k0"].prompt_tokens == 3000
        assert round(lines["k1"].spend_usd, 6) == 1.0
        await recorder.record(_event("k1"))
    finally:
        await recorder.close()  # writes what is still summed
        await bus.close()
    assert {line.group: line.requests for line in await usage.report("key")} == {
        "k0": 1000,
        "k1": 1001,
    }
    await db.close()
