"""Statistics for A/B experiments and canary analysis.

Latency samples are compared with the Mann-Whitney U test (they are skewed, so no t-test),
success and feedback rates with a two-proportion z-test. Every comparison carries an effect
size and a confidence interval, and :func:`compare_arms` writes the verdict a person reads.
:func:`analyse_canary` applies Flagger-style thresholds to a canary beside its stable arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ArmMetrics",
    "CanaryAnalysis",
    "CanaryCheck",
    "CanaryThresholds",
    "MannWhitneyResult",
    "MinimumSamples",
    "ProportionTest",
    "Verdict",
    "analyse_canary",
    "compare_arms",
    "mann_whitney",
    "min_sample_size",
    "percentile",
    "two_proportion_z_test",
]

#: Pairwise differences are computed over at most this many values per arm (the
#: Hodges-Lehmann shift); beyond it each arm is thinned to evenly spaced order statistics.
_MAX_SHIFT_VALUES = 2000

_NORMAL = NormalDist()  # the standard normal: quantiles and tails


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation); None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


class ArmMetrics(BaseModel):
    """What one arm (a deployment, a model version) did over a window.

    Latencies and times to first token are in milliseconds, one per request that has
    them; ``errors`` counts failed requests among ``requests``; feedback is thumbs up/down.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field("arm", min_length=1, max_length=200)
    latencies_ms: list[float] = Field(default_factory=list)
    ttfts_ms: list[float] = Field(default_factory=list)
    requests: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    feedback_up: int = Field(0, ge=0)
    feedback_down: int = Field(0, ge=0)
    tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _errors_within_requests(self) -> ArmMetrics:
        if self.errors > self.requests:
            msg = f"errors ({self.errors}) cannot exceed requests ({self.requests})"
            raise ValueError(msg)
        return self

    @property
    def successes(self) -> int:
        """Requests that did not fail."""
        return self.requests - self.errors

    @property
    def error_rate(self) -> float:
        """Failed requests over all requests (0 with no traffic)."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def success_rate(self) -> float:
        """Successful requests over all requests (0 with no traffic)."""
        return self.successes / self.requests if self.requests else 0.0

    @property
    def feedback_votes(self) -> int:
        """Thumbs up plus thumbs down."""
        return self.feedback_up + self.feedback_down

    @property
    def feedback_rate(self) -> float | None:
        """Share of votes that were thumbs up; None without votes."""
        return self.feedback_up / self.feedback_votes if self.feedback_votes else None

    @property
    def latency_p95_ms(self) -> float | None:
        """95th percentile latency."""
        return percentile(self.latencies_ms, 95)

    @property
    def ttft_p95_ms(self) -> float | None:
        """95th percentile time to first token."""
        return percentile(self.ttfts_ms, 95)


class MinimumSamples(BaseModel):
    """Below these, per arm, a comparison says "not enough data" instead of guessing."""

    model_config = ConfigDict(extra="forbid")

    requests: int = Field(100, ge=1, description="Requests per arm before any verdict.")
    latencies: int = Field(20, ge=2, description="Latency samples per arm for Mann-Whitney U.")
    feedback: int = Field(20, ge=1, description="Feedback votes per arm to compare feedback.")


# -- Mann-Whitney U -----------------------------------------------------------------------


class MannWhitneyResult(BaseModel):
    """Mann-Whitney U on two samples, with effect sizes.

    ``rank_biserial`` runs from -1 to 1; positive means B's values tend to be larger.
    ``shift`` is the Hodges-Lehmann estimate of B minus A (the median of all pairwise
    differences) with its confidence interval; ``p95_change`` is B's 95th percentile
    relative to A's (0.38: 38% higher).
    """

    metric: str
    n_a: int
    n_b: int
    u: float = Field(description="U statistic of arm A.")
    p_value: float
    significant: bool
    rank_biserial: float
    shift: float
    shift_ci: tuple[float, float]
    p95_a: float
    p95_b: float
    p95_change: float | None


def mann_whitney(
    a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05, metric: str = "latency"
) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test of A against B (scipy's ``mannwhitneyu``, method auto)."""
    if len(a) < 1 or len(b) < 1:
        msg = "Mann-Whitney U needs at least one value in each sample"
        raise ValueError(msg)
    # Imported here: scipy.stats adds ~60 MiB to every process that imports this module
    # (the gateway does), and only an experiment's analysis needs it.
    from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    result = mannwhitneyu(x, y, alternative="two-sided")
    u, p_value = float(result.statistic), float(result.pvalue)
    pairs = len(x) * len(y)
    p95_a, p95_b = float(np.percentile(x, 95)), float(np.percentile(y, 95))
    shift, low, high = _hodges_lehmann(x, y, alpha)
    return MannWhitneyResult(
        metric=metric,
        n_a=len(x),
        n_b=len(y),
        u=u,
        p_value=p_value,
        significant=p_value < alpha,
        # U counts pairs where A's value is larger: r = 1 - 2U/(n_a n_b) is positive when B's are.
        rank_biserial=1.0 - 2.0 * u / pairs,
        shift=shift,
        shift_ci=(low, high),
        p95_a=p95_a,
        p95_b=p95_b,
        p95_change=(p95_b / p95_a - 1.0) if p95_a > 0 else None,
    )


def _thin(values: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced order statistics: same distribution, bounded work."""
    if len(values) <= limit:
        return values
    ordered = np.sort(values)
    picked: np.ndarray = ordered[np.linspace(0, len(ordered) - 1, limit).round().astype(int)]
    return picked


def _hodges_lehmann(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Median of the pairwise differences y - x, with the order-statistic confidence interval."""
    x, y = _thin(x, _MAX_SHIFT_VALUES), _thin(y, _MAX_SHIFT_VALUES)
    diffs = np.sort(np.subtract.outer(y, x).ravel())
    n_a, n_b, total = len(x), len(y), len(diffs)
    z = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    # The normal approximation to U's distribution gives how many differences lie outside.
    k = math.floor(n_a * n_b / 2.0 - z * math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12.0))
    k = min(max(k, 0), total - 1)
    return float(np.median(diffs)), float(diffs[k]), float(diffs[total - 1 - k])


# -- two proportions ----------------------------------------------------------------------


class ProportionTest(BaseModel):
    """A two-proportion z-test of B's rate against A's.

    The test uses the pooled proportion; the confidence interval of the difference (B - A)
    uses the unpooled standard error. ``cohens_h`` is the arcsine effect size.
    """

    metric: str
    successes_a: int
    n_a: int
    successes_b: int
    n_b: int
    p_a: float
    p_b: float
    difference: float
    z: float
    p_value: float
    significant: bool
    ci: tuple[float, float]
    cohens_h: float


def two_proportion_z_test(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    *,
    alpha: float = 0.05,
    metric: str = "success rate",
) -> ProportionTest:
    """Two-sided z-test that B's proportion equals A's (pooled standard error)."""
    if n_a < 1 or n_b < 1:
        msg = "each arm needs at least one trial"
        raise ValueError(msg)
    if not (0 <= successes_a <= n_a and 0 <= successes_b <= n_b):
        msg = "successes must lie between 0 and the number of trials"
        raise ValueError(msg)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    # All successes or all failures in both arms: no variation, so no evidence of a difference.
    z = (p_b - p_a) / se_pooled if se_pooled > 0 else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2.0))  # two-sided: 2 * P(Z > |z|)
    se = math.sqrt(p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b)
    margin = _NORMAL.inv_cdf(1.0 - alpha / 2.0) * se
    difference = p_b - p_a
    return ProportionTest(
        metric=metric,
        successes_a=successes_a,
        n_a=n_a,
        successes_b=successes_b,
        n_b=n_b,
        p_a=p_a,
        p_b=p_b,
        difference=difference,
        z=z,
        p_value=p_value,
        significant=p_value < alpha,
        ci=(difference - margin, difference + margin),
        cohens_h=2.0 * math.asin(math.sqrt(p_b)) - 2.0 * math.asin(math.sqrt(p_a)),
    )


def min_sample_size(
    p_base: float, min_effect: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Trials per arm for a two-sided two-proportion test to detect ``p_base`` -> ``+min_effect``.

    The classic normal-approximation formula (Fleiss, without continuity correction).
    """
    p_other = p_base + min_effect
    if not (0 < p_base < 1 and 0 < p_other < 1) or min_effect == 0:
        msg = "p_base and p_base + min_effect must lie strictly between 0 and 1, and differ"
        raise ValueError(msg)
    z_alpha = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    z_power = _NORMAL.inv_cdf(power)
    mean = (p_base + p_other) / 2.0
    spread = z_alpha * math.sqrt(2.0 * mean * (1.0 - mean)) + z_power * math.sqrt(
        p_base * (1.0 - p_base) + p_other * (1.0 - p_other)
    )
    return math.ceil(spread**2 / min_effect**2)


# -- the verdict --------------------------------------------------------------------------

Outcome = Literal["winner", "mixed", "no_significant_difference", "not_enough_data"]


class Verdict(BaseModel):
    """The written result of an A/B comparison.

    ``winner`` is set only when every significant finding favours the same arm; ``mixed``
    means significant findings pull both ways.
    """

    outcome: Outcome
    winner: str | None
    text: str
    findings: list[str]
    alpha: float
    latency: MannWhitneyResult | None = None
    ttft: MannWhitneyResult | None = None
    success: ProportionTest | None = None
    feedback: ProportionTest | None = None


def _format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _percent(change: float) -> str:
    return f"{abs(change):.0%} {'higher' if change > 0 else 'lower'}"


def _latency_finding(test: MannWhitneyResult, b: str, label: str) -> str:
    cite = f"{_format_p(test.p_value)}, Mann-Whitney U"
    change = test.p95_change
    if not test.significant:
        delta = f"{b} {_percent(change)}, " if change is not None and change != 0 else ""
        return f"{label} does not differ significantly ({delta}{cite})"
    if change is not None and (change > 0) == (test.shift > 0) and change != 0:
        return f"{b}'s p95 {label} is {_percent(change)} ({cite})"
    word = "higher" if test.shift > 0 else "lower"
    return f"{b}'s {label} is typically {word} (median shift {test.shift:+.0f} ms; {cite})"


def _rate_finding(test: ProportionTest, b: str, label: str) -> str:
    cite = f"{_format_p(test.p_value)}, two-proportion z-test"
    if not test.significant:
        return f"{label}s do not differ ({cite})"
    low, high = test.ci
    return (
        f"{b}'s {label} is {'higher' if test.difference > 0 else 'lower'} "
        f"({test.p_b:.1%} vs {test.p_a:.1%}, {test.difference * 100:+.1f} points, "
        f"CI {low * 100:+.1f} to {high * 100:+.1f}; {cite})"
    )


def _compare_latencies(
    xs: list[float],
    ys: list[float],
    names: tuple[str, str],
    *,
    alpha: float,
    minimum: int,
    label: str,
) -> tuple[MannWhitneyResult | None, str, int]:
    """A test, its finding, and which arm it favours (-1: A, 1: B, 0: neither)."""
    if len(xs) < minimum or len(ys) < minimum:
        return None, f"{label}: not enough samples ({len(xs)} and {len(ys)}; {minimum} needed)", 0
    test = mann_whitney(xs, ys, alpha=alpha, metric=label)
    favours = 0 if not test.significant else (-1 if test.shift > 0 else 1)
    return test, _latency_finding(test, names[1], label), favours


def _compare_rates(
    a: tuple[int, int], b: tuple[int, int], names: tuple[str, str], alpha: float, label: str
) -> tuple[ProportionTest, str, int]:
    test = two_proportion_z_test(a[0], a[1], b[0], b[1], alpha=alpha, metric=label)
    favours = 0 if not test.significant else (1 if test.difference > 0 else -1)
    return test, _rate_finding(test, names[1], label), favours


def compare_arms(
    a: ArmMetrics, b: ArmMetrics, alpha: float = 0.05, minimums: MinimumSamples | None = None
) -> Verdict:
    """Compare arm B with arm A: latency, TTFT, success and feedback rates, and a verdict."""
    minimums = minimums or MinimumSamples()
    if a.requests < minimums.requests or b.requests < minimums.requests:
        text = (
            f"Not enough data: {a.name} has {a.requests} requests and {b.name} {b.requests}; "
            f"{minimums.requests} per arm are needed."
        )
        return Verdict(
            outcome="not_enough_data", winner=None, text=text, findings=[text], alpha=alpha
        )
    names = (a.name, b.name)
    latency, latency_text, latency_vote = _compare_latencies(
        a.latencies_ms,
        b.latencies_ms,
        names,
        alpha=alpha,
        minimum=minimums.latencies,
        label="latency",
    )
    ttft, ttft_text, ttft_vote = _compare_latencies(
        a.ttfts_ms,
        b.ttfts_ms,
        names,
        alpha=alpha,
        minimum=minimums.latencies,
        label="time to first token",
    )
    success, success_text, success_vote = _compare_rates(
        (a.successes, a.requests), (b.successes, b.requests), names, alpha, "success rate"
    )
    feedback: ProportionTest | None = None
    feedback_vote = 0
    if min(a.feedback_votes, b.feedback_votes) >= minimums.feedback:
        feedback, feedback_text, feedback_vote = _compare_rates(
            (a.feedback_up, a.feedback_votes),
            (b.feedback_up, b.feedback_votes),
            names,
            alpha,
            "feedback rate",
        )
    else:
        feedback_text = (
            f"feedback: not enough votes ({a.feedback_votes} and {b.feedback_votes}; "
            f"{minimums.feedback} per arm needed)"
        )
    findings = [latency_text, ttft_text, success_text, feedback_text]
    votes = {"latency": latency_vote, "ttft": ttft_vote}
    votes |= {"success": success_vote, "feedback": feedback_vote}
    outcome, winner, conclusion = _conclude(votes, a.name, b.name)
    text = "; ".join(findings) + ". " + conclusion
    return Verdict(
        outcome=outcome,
        winner=winner,
        text=text[0].upper() + text[1:],
        findings=findings,
        alpha=alpha,
        latency=latency,
        ttft=ttft,
        success=success,
        feedback=feedback,
    )


def _conclude(votes: dict[str, int], a: str, b: str) -> tuple[Outcome, str | None, str]:
    """Who wins: the arm every significant finding favours, if there is one."""
    for_a = [metric for metric, vote in votes.items() if vote < 0]
    for_b = [metric for metric, vote in votes.items() if vote > 0]
    if for_a and for_b:
        return (
            "mixed",
            None,
            f"No clear winner: {a} is better on {', '.join(for_a)}, {b} on {', '.join(for_b)}.",
        )
    if for_a or for_b:
        winner = a if for_a else b
        return "winner", winner, f"Winner: {winner} (on {', '.join(for_a or for_b)})."
    return "no_significant_difference", None, "No significant difference."


# -- canary analysis ----------------------------------------------------------------------


class CanaryThresholds(BaseModel):
    """Flagger-style limits a canary must stay within, measured beside the stable arm."""

    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(20, ge=1, description="Canary requests before judging (else hold).")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Canary error rate allowed.")
    max_latency_p95_ratio: float = Field(1.5, gt=0, description="Canary p95 / stable p95.")
    max_ttft_p95_ratio: float = Field(1.5, gt=0, description="Canary TTFT p95 / stable's.")
    latency_slack_ms: float = Field(
        0.0, ge=0, description="Added to the latency and TTFT limits (tiny values are noisy)."
    )
    min_feedback_rate: float | None = Field(
        None, ge=0, le=1, description="Least share of thumbs up on the canary."
    )
    min_feedback_votes: int = Field(10, ge=1, description="Votes before feedback is judged.")


class CanaryCheck(BaseModel):
    """One threshold applied."""

    name: str
    value: float
    limit: float
    passed: bool


class CanaryAnalysis(BaseModel):
    """Whether a canary step passes, fails or must hold for more traffic, and why."""

    decision: Literal["pass", "fail", "hold"]
    reasons: list[str]
    checks: list[CanaryCheck]
    notes: list[str]
    text: str

    @property
    def passed(self) -> bool:
        """True only for ``pass``."""
        return self.decision == "pass"


def _ratio_check(
    name: str, stable: float | None, canary: float | None, ratio: float, slack: float
) -> tuple[CanaryCheck | None, str | None]:
    """A canary/stable percentile check, or a note saying why it could not run."""
    if stable is None or canary is None:
        side = "stable" if stable is None else "canary"
        return None, f"{name}: not compared (no {side} samples)"
    limit = stable * ratio + slack
    return CanaryCheck(name=name, value=canary, limit=limit, passed=canary <= limit), None


def _canary_checks(
    stable: ArmMetrics, canary: ArmMetrics, limits: CanaryThresholds
) -> tuple[list[CanaryCheck], list[str]]:
    checks = [
        CanaryCheck(
            name="error_rate",
            value=canary.error_rate,
            limit=limits.max_error_rate,
            passed=canary.error_rate <= limits.max_error_rate,
        )
    ]
    notes: list[str] = []
    ratios = (
        (
            "latency_p95_ms",
            stable.latency_p95_ms,
            canary.latency_p95_ms,
            limits.max_latency_p95_ratio,
        ),
        ("ttft_p95_ms", stable.ttft_p95_ms, canary.ttft_p95_ms, limits.max_ttft_p95_ratio),
    )
    for name, base, value, ratio in ratios:
        check, note = _ratio_check(name, base, value, ratio, limits.latency_slack_ms)
        checks.extend([check] if check else [])
        notes.extend([note] if note else [])
    if limits.min_feedback_rate is not None:
        rate = canary.feedback_rate
        if rate is None or canary.feedback_votes < limits.min_feedback_votes:
            notes.append(f"feedback_rate: not judged ({canary.feedback_votes} votes)")
        else:
            check = CanaryCheck(
                name="feedback_rate",
                value=rate,
                limit=limits.min_feedback_rate,
                passed=rate >= limits.min_feedback_rate,
            )
            checks.append(check)
    return checks, notes


def _describe(check: CanaryCheck) -> str:
    if check.name in {"error_rate", "feedback_rate"}:
        relation = "above" if check.name == "error_rate" else "below"
        return f"{check.name} {check.value:.1%} is {relation} the limit {check.limit:.1%}"
    return f"{check.name} {check.value:.0f} ms is above the limit {check.limit:.0f} ms"


def _early_decision(canary: ArmMetrics, limits: CanaryThresholds) -> CanaryAnalysis:
    """Too little traffic to judge: hold, unless the errors already exceed the budget."""
    if canary.errors > limits.max_error_rate * limits.min_requests:
        reason = (
            f"error_rate: {canary.errors} of {canary.requests} canary requests failed, more "
            f"than {limits.max_error_rate:.1%} of the {limits.min_requests} needed to judge"
        )
        return CanaryAnalysis(
            decision="fail", reasons=[reason], checks=[], notes=[], text=f"Fail: {reason}."
        )
    reason = f"canary served {canary.requests} requests; {limits.min_requests} needed"
    return CanaryAnalysis(
        decision="hold", reasons=[reason], checks=[], notes=[], text=f"Hold: {reason}."
    )


def analyse_canary(
    stable: ArmMetrics, canary: ArmMetrics, thresholds: CanaryThresholds | None = None
) -> CanaryAnalysis:
    """Judge one canary interval: ``pass``, ``fail`` (roll back) or ``hold`` (too little traffic).

    A canary that has already failed more requests than the error budget allows at the
    minimum request count fails at once, however little traffic it has seen: a crashing
    replica must not wait for more victims.
    """
    limits = thresholds or CanaryThresholds()
    if canary.requests < limits.min_requests:
        return _early_decision(canary, limits)
    checks, notes = _canary_checks(stable, canary, limits)
    failed = [_describe(c) for c in checks if not c.passed]
    decision: Literal["pass", "fail"] = "fail" if failed else "pass"
    summary = "; ".join(failed) if failed else f"all {len(checks)} checks within limits"
    return CanaryAnalysis(
        decision=decision,
        reasons=failed,
        checks=checks,
        notes=notes,
        text=f"{decision.capitalize()}: {summary}.",
    )
