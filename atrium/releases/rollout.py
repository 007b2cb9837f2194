"""Canary analysis and the route a release drives.

:func:`judge` compares the canary's window with the stable version's (error rate, p95
latency, p95 time to first token) against the policy's thresholds. :func:`canary_route`
is the gateway route for a canary step: a weighted split, the stable version as the
fallback, so a canary's failure is retried on the stable version and never reaches
the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from atrium.releases.analysis import ArmWindow
from atrium.releases.policy import CanaryAnalysisPolicy, CanaryPolicy

Verdict = Literal["pass", "fail", "hold"]


@dataclass(frozen=True, slots=True)
class Judgement:
    """One analysis of a canary step."""

    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the timeline and events."""
        return "; ".join(self.reasons) if self.reasons else self.verdict


#: Below this many samples a p95 is the slowest request or two: the median is judged.
P95_MIN_SAMPLES = 20


def p95(values: list[float]) -> float | None:
    """The 95th percentile, or None without samples."""
    return float(np.percentile(values, 95)) if values else None


def _typical(mine: list[float], theirs: list[float]) -> tuple[str, float | None, float | None]:
    """p95 of both arms when both have enough samples, else their medians."""
    q, label = (95, "p95") if min(len(mine), len(theirs)) >= P95_MIN_SAMPLES else (50, "median")
    return label, _percentile(mine, q), _percentile(theirs, q)


def _percentile(values: list[float], q: int) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _describe(window: ArmWindow) -> dict[str, Any]:
    return {
        "requests": window.requests,
        "errors": window.errors,
        "error_rate": round(window.error_rate, 4),
        "p95_latency_ms": _round(p95(window.latencies_ms)),
        "p95_ttft_ms": _round(p95(window.ttfts_ms)),
        "feedback_up": window.feedback_up,
        "feedback_down": window.feedback_down,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def judge(
    stable: ArmWindow, canary: ArmWindow, policy: CanaryAnalysisPolicy, *, final: bool
) -> Judgement:
    """Pass, fail or hold the canary.

    Failures are judged as soon as the canary has ``min_requests`` attempts (a clear
    failure need not wait for the interval's end); a pass needs the interval to be over
    (``final``) and both arms to have enough traffic, else the step holds.
    """
    metrics = {"stable": _describe(stable), "canary": _describe(canary)}
    if canary.requests < policy.min_requests:
        msg = f"canary had {canary.requests} requests, {policy.min_requests} needed to judge"
        return Judgement("hold", [msg], metrics)
    reasons = _failures(stable, canary, policy)
    if reasons:
        return Judgement("fail", reasons, metrics)
    if not final:
        return Judgement("hold", ["interval not over"], metrics)
    if stable.requests < policy.min_requests and stable.requests > 0:
        msg = f"stable had {stable.requests} requests, {policy.min_requests} needed to compare"
        return Judgement("hold", [msg], metrics)
    return Judgement("pass", [], metrics)


def _failures(stable: ArmWindow, canary: ArmWindow, policy: CanaryAnalysisPolicy) -> list[str]:
    reasons: list[str] = []
    allowed = stable.error_rate + policy.max_error_rate
    if canary.error_rate > allowed:
        reasons.append(
            f"error rate {canary.error_rate:.1%} over {allowed:.1%} "
            f"(stable {stable.error_rate:.1%} + {policy.max_error_rate:.1%}): "
            f"{canary.errors} of {canary.requests} requests failed"
        )
    checks = (
        ("latency", canary.latencies_ms, stable.latencies_ms, policy.max_latency_ratio),
        ("time to first token", canary.ttfts_ms, stable.ttfts_ms, policy.max_ttft_ratio),
    )
    for name, mine, theirs, ratio in checks:
        label, canary_ms, stable_ms = _typical(mine, theirs)
        reason = _ratio_failure(
            f"{label} {name}", canary_ms, stable_ms, ratio, policy.latency_floor_ms
        )
        if reason is not None:
            reasons.append(reason)
    feedback = _feedback_failure(stable, canary, policy)
    if feedback is not None:
        reasons.append(feedback)
    return reasons


def _feedback_failure(
    stable: ArmWindow, canary: ArmWindow, policy: CanaryAnalysisPolicy
) -> str | None:
    votes = (stable.feedback_up + stable.feedback_down, canary.feedback_up + canary.feedback_down)
    if min(votes) < policy.min_feedback:
        return None
    theirs, mine = stable.feedback_up / votes[0], canary.feedback_up / votes[1]
    if mine >= theirs - policy.max_feedback_drop:
        return None
    return (
        f"thumbs-up rate {mine:.0%} is below stable's {theirs:.0%} "
        f"by more than {policy.max_feedback_drop:.0%} ({votes[1]} votes)"
    )


def _ratio_failure(
    name: str, canary: float | None, stable: float | None, ratio: float, floor_ms: float
) -> str | None:
    if canary is None or stable is None or stable <= 0:
        return None
    if canary <= stable * ratio or canary - stable < floor_ms:
        return None
    return (
        f"{name} {canary:.0f} ms is {canary / stable:.2f}x stable's {stable:.0f} ms "
        f"(at most {ratio:g}x)"
    )


def canary_route(stable: str, canary: str, weight: float, policy: CanaryPolicy) -> dict[str, Any]:
    """The route for one step: ``weight`` percent to the canary, the rest to stable."""
    if weight >= 100:
        targets = [{"model": canary, "weight": 100.0}]
    else:
        targets = [
            {"model": stable, "weight": 100.0 - weight},
            {"model": canary, "weight": weight},
        ]
    return {"targets": targets, "fallbacks": [stable], "sticky": policy.sticky, "retries": 0}


def single_route(model: str) -> dict[str, Any]:
    """The route once a version serves everything (after promotion or rollback)."""
    return {"targets": [{"model": model, "weight": 1.0}], "sticky": "none", "retries": 1}
