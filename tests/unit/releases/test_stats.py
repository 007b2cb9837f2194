"""A/B statistics and canary analysis against textbook values and hand computations."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from atrium.releases.stats import (
    ArmMetrics,
    CanaryThresholds,
    MinimumSamples,
    analyse_canary,
    compare_arms,
    mann_whitney,
    min_sample_size,
    percentile,
    two_proportion_z_test,
)

# scipy's documented example (scipy.stats.mannwhitneyu): ages of male and female
# workers; U1 = 17 and the exact two-sided p-value is 1/9.
MALES = [19.0, 22.0, 16.0, 29.0, 24.0]
FEMALES = [20.0, 11.0, 17.0, 12.0]


def _arm(name: str, latency: float, *, n: int = 120, errors: int = 0, **extra: int) -> ArmMetrics:
    """An arm whose latencies spread evenly over latency +/- 20%, deterministically."""
    spread = [latency * (0.8 + 0.4 * i / (n - 1)) for i in range(n)]
    return ArmMetrics(
        name=name,
        latencies_ms=spread,
        ttfts_ms=[v / 10 for v in spread],
        requests=n,
        errors=errors,
        **extra,
    )


def test_mann_whitney_matches_scipys_documented_example() -> None:
    result = mann_whitney(MALES, FEMALES)
    assert result.u == 17.0
    assert result.p_value == pytest.approx(1 / 9)
    assert not result.significant
    # r = 1 - 2U/(n_a n_b) = 1 - 34/20: the second sample tends to be smaller.
    assert result.rank_biserial == pytest.approx(-0.7)
    # The 20 pairwise differences (female - male), sorted, have -7 and -7 in the middle;
    # with k = floor(10 - 1.96 * sqrt(200 / 12)) = 1 the interval is the 2nd smallest
    # and the 2nd largest difference.
    assert result.shift == -7.0
    assert result.shift_ci == (-17.0, 1.0)


def test_mann_whitney_needs_values() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney([], [1.0])


def test_two_proportion_z_test_by_hand() -> None:
    # 45/100 against 56/100: pooled p = 101/200 = 0.505,
    # SE = sqrt(0.505 * 0.495 * (1/100 + 1/100)) = 0.0707071, z = 0.11 / SE = 1.55571,
    # two-sided p = erfc(z / sqrt 2) = 0.11978.
    result = two_proportion_z_test(45, 100, 56, 100)
    se = math.sqrt(0.505 * 0.495 * 0.02)
    assert result.z == pytest.approx(0.11 / se)
    assert result.z == pytest.approx(1.55571, abs=1e-5)
    assert result.p_value == pytest.approx(math.erfc(result.z / math.sqrt(2)))
    assert result.p_value == pytest.approx(0.11978, abs=1e-5)
    assert not result.significant
    # Unpooled 95% interval: 0.11 +/- 1.959964 * sqrt(.45*.55/100 + .56*.44/100).
    margin = 1.959964 * math.sqrt(0.45 * 0.55 / 100 + 0.56 * 0.44 / 100)
    assert result.ci == pytest.approx((0.11 - margin, 0.11 + margin), abs=1e-6)
    assert result.cohens_h == pytest.approx(2 * math.asin(0.56**0.5) - 2 * math.asin(0.45**0.5))


def test_two_proportion_z_test_detects_a_large_difference_and_handles_no_variation() -> None:
    assert two_proportion_z_test(900, 1000, 800, 1000).p_value < 1e-6
    same = two_proportion_z_test(50, 50, 70, 70)
    assert (same.z, same.p_value, same.significant) == (0.0, 1.0, False)
    with pytest.raises(ValueError, match="between 0"):
        two_proportion_z_test(5, 4, 1, 4)


def test_minimum_sample_size_matches_the_textbook_formula() -> None:
    # 50% -> 60%, alpha 0.05 two-sided, power 0.8: the classic 388 per group (387.3 rounded up).
    assert min_sample_size(0.5, 0.1) == 388
    # 65% -> 85%: (1.96 sqrt(2 .75 .25) + 0.8416 sqrt(.65 .35 + .85 .15))^2 / 0.04 = 72.4.
    assert min_sample_size(0.65, 0.2) == 73
    assert min_sample_size(0.5, 0.1, power=0.9) > 388
    with pytest.raises(ValueError, match="strictly between"):
        min_sample_size(0.95, 0.1)


def test_percentile_and_arm_rates() -> None:
    assert percentile([], 95) is None
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    arm = ArmMetrics(requests=10, errors=2, feedback_up=3, feedback_down=1)
    assert (arm.error_rate, arm.success_rate, arm.feedback_rate) == (0.2, 0.8, 0.75)
    with pytest.raises(ValidationError, match="cannot exceed"):
        ArmMetrics(requests=1, errors=2)


def test_verdict_names_the_slower_arm_and_the_faster_winner() -> None:
    a = _arm("A", 100.0, feedback_up=40, feedback_down=10)
    b = _arm("B", 138.0, errors=1, feedback_up=39, feedback_down=11)
    verdict = compare_arms(a, b)
    assert verdict.outcome == "winner"
    assert verdict.winner == "A"
    assert verdict.latency is not None
    assert verdict.latency.significant
    assert verdict.text.startswith("B's p95 latency is 38% higher (p<0.001, Mann-Whitney U)")
    assert "success rates do not differ (p=0.32, two-proportion z-test)" in verdict.text
    assert "feedback rates do not differ" in verdict.text
    assert verdict.text.endswith("Winner: A (on latency, ttft).")


def test_verdict_without_differences_and_with_a_trade_off() -> None:
    same = compare_arms(_arm("A", 100.0), _arm("B", 100.0))
    assert same.outcome == "no_significant_difference"
    assert same.winner is None
    assert same.text.endswith("No significant difference.")
    # B is slower but fails far fewer requests: the verdict says so instead of picking.
    mixed = compare_arms(_arm("A", 100.0, errors=30), _arm("B", 150.0, errors=2))
    assert mixed.outcome == "mixed"
    assert "B's success rate is higher (98.3% vs 75.0%" in mixed.text
    assert mixed.text.endswith("No clear winner: A is better on latency, ttft, B on success.")


def test_verdict_needs_the_minimum_samples() -> None:
    few = compare_arms(_arm("A", 100.0, n=40), _arm("B", 300.0, n=40))
    assert few.outcome == "not_enough_data"
    assert few.text == "Not enough data: A has 40 requests and B 40; 100 per arm are needed."
    # Enough requests, too few feedback votes: the other tests still run.
    small = MinimumSamples(requests=30, latencies=30, feedback=50)
    verdict = compare_arms(_arm("A", 100.0, n=40), _arm("B", 300.0, n=40), minimums=small)
    assert verdict.winner == "A"
    assert "feedback: not enough votes (0 and 0; 50 per arm needed)" in verdict.text


def test_canary_passes_within_thresholds() -> None:
    analysis = analyse_canary(_arm("stable", 100.0), _arm("canary", 110.0))
    assert analysis.decision == "pass"
    assert analysis.passed
    assert [c.name for c in analysis.checks] == ["error_rate", "latency_p95_ms", "ttft_p95_ms"]
    assert analysis.text == "Pass: all 3 checks within limits."


def test_canary_fails_on_latency_errors_and_feedback_with_reasons() -> None:
    limits = CanaryThresholds(min_feedback_rate=0.8)
    canary = _arm("canary", 200.0, errors=5, feedback_up=5, feedback_down=15)
    analysis = analyse_canary(_arm("stable", 100.0), canary, limits)
    assert analysis.decision == "fail"
    assert not analysis.passed
    assert analysis.reasons == [
        "error_rate 4.2% is above the limit 1.0%",
        "latency_p95_ms 236 ms is above the limit 177 ms",
        "ttft_p95_ms 24 ms is above the limit 18 ms",
        "feedback_rate 25.0% is below the limit 80.0%",
    ]


def test_canary_holds_for_traffic_but_fails_fast_on_errors() -> None:
    stable = _arm("stable", 100.0)
    quiet = analyse_canary(stable, _arm("canary", 100.0, n=5))
    assert quiet.decision == "hold"
    assert quiet.text == "Hold: canary served 5 requests; 20 needed."
    crashing = analyse_canary(stable, _arm("canary", 100.0, n=5, errors=1))
    assert crashing.decision == "fail"
    assert crashing.reasons[0].startswith("error_rate: 1 of 5 canary requests failed")


def test_canary_notes_what_it_could_not_compare() -> None:
    idle_stable = ArmMetrics(name="stable")
    analysis = analyse_canary(idle_stable, _arm("canary", 100.0), CanaryThresholds())
    assert analysis.decision == "pass"
    assert analysis.notes == [
        "latency_p95_ms: not compared (no stable samples)",
        "ttft_p95_ms: not compared (no stable samples)",
    ]


def test_importing_the_statistics_leaves_scipy_unloaded() -> None:
    # scipy.stats is ~60 MiB resident; the gateway imports this module at start.
    code = "import sys, atrium.releases.stats; sys.exit('scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_normal_quantiles_and_tails_match_scipy() -> None:
    from scipy.stats import norm  # type: ignore[import-untyped]

    result = two_proportion_z_test(10, 1000, 40, 1000, alpha=0.01)
    se = math.sqrt(0.01 * 0.99 / 1000 + 0.04 * 0.96 / 1000)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(result.z)), rel=1e-9)
    assert result.ci[1] - result.difference == pytest.approx(norm.ppf(0.995) * se, rel=1e-12)
