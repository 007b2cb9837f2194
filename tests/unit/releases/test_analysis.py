"""Per-arm numbers from the gateway's request events."""

from __future__ import annotations

from datetime import UTC, datetime

from atrium.bus import InProcessEventBus
from atrium.bus.events import FeedbackGiven, RequestCompleted
from atrium.releases.analysis import ArmObserver


def completed(at: float, latency_ms: float, **fields: object) -> RequestCompleted:
    base: dict[str, object] = {
        "model": "smol",
        "key_id": "k",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": latency_ms,
        "status": 200,
        "stream": False,
        "endpoint": "chat.completions",
        "routed_to": "smol-v2",
        "occurred_at": datetime.fromtimestamp(at, UTC),
    }
    return RequestCompleted.model_validate({**base, **fields})


async def test_failed_attempts_count_against_their_arm_and_the_answer_for_its_own() -> None:
    observer = ArmObserver(InProcessEventBus())
    await observer.observe(
        completed(100, 50, failed_targets=["smol-v2"], routed_to="smol-v1")  # fell back
    )
    await observer.observe(completed(101, 40, status=503, failed_targets=["smol-v2"]))
    await observer.observe(completed(102, 30, status=400))  # the caller's mistake
    canary, stable = observer.window("smol-v2", 0, 200), observer.window("smol-v1", 0, 200)
    assert (canary.requests, canary.errors) == (2, 2)  # the 503 is not counted twice
    assert (stable.requests, stable.errors, stable.latencies_ms) == (1, 0, [50])


async def test_latency_is_kept_only_for_requests_that_started_after_the_warm_up() -> None:
    observer = ArmObserver(InProcessEventBus())
    await observer.observe(completed(120, 19_000))  # started at 101: cold, ended late
    await observer.observe(completed(121, 500))  # started at 120.5
    window = observer.window("smol-v2", 100, 200, timed_from=110)
    assert window.requests == 2
    assert window.latencies_ms == [500]


async def test_feedback_is_counted_for_the_arm_in_the_window() -> None:
    observer = ArmObserver(InProcessEventBus())
    for positive in (True, True, False):
        await observer.observe_feedback(FeedbackGiven(target="smol-v2", positive=positive))
    now = datetime.now(UTC).timestamp()
    window = observer.window("smol-v2", now - 60, now + 60)
    assert (window.feedback_up, window.feedback_down) == (2, 1)
    assert observer.window("smol-v1", now - 60, now + 60).feedback_up == 0
