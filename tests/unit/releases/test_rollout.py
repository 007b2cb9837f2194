"""Canary judgement and the routes a release drives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atrium.releases.analysis import ArmWindow
from atrium.releases.policy import CanaryAnalysisPolicy, CanaryPolicy
from atrium.releases.rollout import canary_route, judge, single_route

POLICY = CanaryAnalysisPolicy(min_requests=5, max_error_rate=0.05, max_latency_ratio=1.5)


def arm(name: str, latencies: list[float], errors: int = 0) -> ArmWindow:
    return ArmWindow(
        name,
        requests=len(latencies) + errors,
        errors=errors,
        latencies_ms=latencies,
        ttfts_ms=[x / 4 for x in latencies],
    )


def test_too_little_traffic_holds() -> None:
    verdict = judge(arm("s", [100] * 30), arm("c", [100] * 3), POLICY, final=True)
    assert verdict.verdict == "hold"
    assert "3 requests, 5 needed" in verdict.summary()


def test_errors_fail_at_once_even_mid_interval() -> None:
    verdict = judge(arm("s", [100] * 30), arm("c", [100] * 4, errors=2), POLICY, final=False)
    assert verdict.verdict == "fail"
    assert "2 of 6 requests failed" in verdict.summary()


def test_a_healthy_canary_passes_only_when_the_interval_is_over() -> None:
    stable, canary = arm("s", [100] * 30), arm("c", [110] * 8)
    assert judge(stable, canary, POLICY, final=False).verdict == "hold"
    passed = judge(stable, canary, POLICY, final=True)
    assert passed.verdict == "pass"
    assert passed.metrics["canary"]["requests"] == 8


def test_few_samples_are_judged_by_the_median_not_the_slowest() -> None:
    cold_first = [900.0] + [100.0] * 7  # a cold replica's first request
    assert judge(arm("s", [100] * 30), arm("c", cold_first), POLICY, final=True).verdict == "pass"


def test_a_slow_canary_fails_on_p95_with_enough_samples() -> None:
    slow = [100.0] * 20 + [400.0] * 5
    verdict = judge(arm("s", [100.0] * 40), arm("c", slow), POLICY, final=True)
    assert verdict.verdict == "fail"
    assert "p95 latency 400 ms is 4.00x stable's 100 ms (at most 1.5x)" in verdict.reasons


def test_differences_below_the_floor_are_noise() -> None:
    verdict = judge(arm("s", [10.0] * 30), arm("c", [40.0] * 30), POLICY, final=True)
    assert verdict.verdict == "pass"  # 4x, but only 30 ms apart (floor: 50 ms)


def test_routes_for_steps_promotion_and_rollback() -> None:
    policy = CanaryPolicy(step_weights=[5, 25, 100])
    step = canary_route("v1", "v2", 25, policy)
    assert step["targets"] == [
        {"model": "v1", "weight": 75.0},
        {"model": "v2", "weight": 25.0},
    ]
    assert step["fallbacks"] == ["v1"]
    assert step["retries"] == 0  # a failing canary falls back at once
    assert canary_route("v1", "v2", 100, policy)["targets"] == [{"model": "v2", "weight": 100.0}]
    assert single_route("v2")["targets"] == [{"model": "v2", "weight": 1.0}]


def test_step_weights_and_flagger_style_increments() -> None:
    assert CanaryPolicy(step_weights=[5, 25, 50]).weights() == [5, 25, 50]
    assert CanaryPolicy(step_weight=20, max_weight=60).weights() == [20, 40, 60]
    assert CanaryPolicy(step_weight=30).weights() == [30, 60, 90, 100]
    with pytest.raises(ValidationError, match="must increase"):
        CanaryPolicy(step_weights=[50, 25])
    with pytest.raises(ValidationError, match="percentages"):
        CanaryPolicy(step_weights=[0, 50])


def voted(window: ArmWindow, up: int, down: int) -> ArmWindow:
    window.feedback_up, window.feedback_down = up, down
    return window


def test_a_canary_users_dislike_fails_once_both_arms_have_votes() -> None:
    policy = CanaryAnalysisPolicy(min_requests=5, min_feedback=10, max_feedback_drop=0.1)
    stable = voted(arm("s", [100] * 30), up=18, down=2)  # 90% up
    liked = voted(arm("c", [100] * 10), up=9, down=2)  # 82%: within 10 points
    disliked = voted(arm("c", [100] * 10), up=5, down=6)  # 45%
    few = voted(arm("c", [100] * 10), up=0, down=5)  # 5 votes: not judged yet
    assert judge(stable, liked, policy, final=True).verdict == "pass"
    assert judge(stable, few, policy, final=True).verdict == "pass"
    failed = judge(stable, disliked, policy, final=True)
    assert failed.verdict == "fail"
    assert failed.reasons == [
        "thumbs-up rate 45% is below stable's 90% by more than 10% (11 votes)"
    ]
