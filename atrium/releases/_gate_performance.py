"""The performance gate: a short streamed load on the candidate and production.

Both models get the same requests in alternating rounds (candidate first in even rounds,
production first in odd ones), so drift in the machine's load falls on both alike. Each
round sends ``concurrency`` streamed requests at once. The candidate's time to first
token (p50, p95), throughput (completion tokens per second of round time) and error rate
are compared with production's by ratio, and with absolute limits where configured.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from atrium.releases._gate_calls import StreamOutcome, bounded_stream
from atrium.releases._gate_types import (
    MAX_FAILURES,
    CaseFailure,
    GateResult,
    PerformanceGateConfig,
    clip,
)
from atrium.releases.stats import percentile
from atrium.runtime.base import ModelBackend
from atrium.runtime.schema import ChatCompletionRequest

Clock = Callable[[], float]


@dataclass(slots=True)
class LoadSample:
    """What one model did under the load."""

    outcomes: list[tuple[str, StreamOutcome]] = field(default_factory=list)
    busy_s: float = 0.0

    @property
    def ok(self) -> list[StreamOutcome]:
        """Requests that streamed to the end."""
        return [o for _, o in self.outcomes if o.error is None]

    def metrics(self) -> dict[str, float]:
        """TTFT percentiles (ms), tokens per second, error rate, latency p95 (ms)."""
        ttfts = [o.ttft_s * 1000 for o in self.ok if o.ttft_s is not None]
        tokens = sum(o.completion_tokens for o in self.ok)
        values = {
            "requests": float(len(self.outcomes)),
            "error_rate": 1 - len(self.ok) / len(self.outcomes) if self.outcomes else 0.0,
            "tokens_per_second": tokens / self.busy_s if self.busy_s > 0 else 0.0,
            "ttft_p50_ms": percentile(ttfts, 50),
            "ttft_p95_ms": percentile(ttfts, 95),
            "latency_p95_ms": percentile([o.total_s * 1000 for o in self.ok], 95),
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Limit:
    """One performance check."""

    name: str
    value: float | None
    limit: float
    higher_is_better: bool
    rule: str

    @property
    def passed(self) -> bool:
        """Within the limit (a missing value fails)."""
        if self.value is None:
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def describe(self) -> str:
        """``ttft_p95_ms 412 > limit 96 (1.5x production + 25 ms)``."""
        shown = "none" if self.value is None else f"{self.value:.3g}"
        sign = "<" if self.higher_is_better else ">"
        return f"{self.name} {shown} {sign} limit {self.limit:.3g} ({self.rule})"


class LoadRunner:
    """Drives the alternating rounds."""

    def __init__(self, config: PerformanceGateConfig, seed: int, clock: Clock) -> None:
        self._config = config
        self._seed = seed
        self._clock = clock

    def _request(self, backend: ModelBackend, index: int) -> tuple[str, ChatCompletionRequest]:
        prompt = self._config.prompts[index % len(self._config.prompts)]
        body = {
            "model": backend.name,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self._config.max_tokens,
            "temperature": 0.0,
            "seed": self._seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return prompt, ChatCompletionRequest.model_validate(body)

    async def _round(
        self, backend: ModelBackend, first: int, count: int, sample: LoadSample
    ) -> None:
        requests = [self._request(backend, first + i) for i in range(count)]
        started = self._clock()
        outcomes = await asyncio.gather(
            *(bounded_stream(backend, r, self._config.timeout_s, self._clock) for _, r in requests)
        )
        sample.busy_s += self._clock() - started
        sample.outcomes.extend(zip((p for p, _ in requests), outcomes, strict=True))

    async def _warm(self, backend: ModelBackend) -> None:
        for i in range(self._config.warmup):
            await bounded_stream(backend, self._request(backend, i)[1], self._config.timeout_s)

    async def run(
        self, candidate: ModelBackend, baseline: ModelBackend | None
    ) -> tuple[LoadSample, LoadSample | None]:
        """The candidate's sample and production's (None without production)."""
        models = [candidate] if baseline is None else [candidate, baseline]
        samples = [LoadSample() for _ in models]
        for model in models:
            await self._warm(model)
        done, index = 0, 0
        while done < self._config.requests:
            count = min(self._config.concurrency, self._config.requests - done)
            order = range(len(models)) if index % 2 == 0 else reversed(range(len(models)))
            for m in order:
                await self._round(models[m], done, count, samples[m])
            done, index = done + count, index + 1
        return samples[0], (samples[1] if baseline is not None else None)


def limits(
    config: PerformanceGateConfig, ours: dict[str, float], theirs: dict[str, float] | None
) -> list[Limit]:
    """Every check that applies: ratios against production, absolute limits, errors."""
    checks = [
        Limit("error_rate", ours.get("error_rate"), config.max_error_rate, False, "max error rate")
    ]
    slack = config.ttft_slack_ms
    if theirs is not None:
        for name, ratio in (
            ("ttft_p50_ms", config.max_ttft_p50_ratio),
            ("ttft_p95_ms", config.max_ttft_p95_ratio),
        ):
            if ratio is not None and name in theirs:
                limit = theirs[name] * ratio + slack
                rule = f"{ratio:g}x production's {theirs[name]:.3g} + {slack:g} ms"
                checks.append(Limit(name, ours.get(name), limit, False, rule))
        ratio = config.min_tokens_per_second_ratio
        base_tps = theirs.get("tokens_per_second")
        if ratio is not None and base_tps:
            rule = f"{ratio:g}x production's {base_tps:.3g}"
            tps = ours.get("tokens_per_second")
            checks.append(Limit("tokens_per_second", tps, base_tps * ratio, True, rule))
    if config.max_ttft_p95_ms is not None:
        ttft = ours.get("ttft_p95_ms")
        checks.append(Limit("ttft_p95_ms", ttft, config.max_ttft_p95_ms, False, "absolute"))
    if config.min_tokens_per_second is not None:
        tps = ours.get("tokens_per_second")
        checks.append(
            Limit("tokens_per_second", tps, config.min_tokens_per_second, True, "absolute")
        )
    return checks


def _failures(checks: list[Limit], sample: LoadSample) -> list[CaseFailure]:
    found = [
        CaseFailure(
            case=check.name,
            input="streamed load",
            expected=("at least " if check.higher_is_better else "at most ")
            + f"{check.limit:.3g} ({check.rule})",
            got="none" if check.value is None else f"{check.value:.3g}",
        )
        for check in checks
        if not check.passed
    ]
    found += [
        CaseFailure(
            case=f"request-{i}",
            input=clip(prompt),
            expected="a complete streamed answer",
            got=outcome.error or "",
        )
        for i, (prompt, outcome) in enumerate(sample.outcomes)
        if outcome.error is not None
    ]
    return found[:MAX_FAILURES]


class PerformanceGate:
    """Measures both models and judges the candidate."""

    def __init__(
        self, config: PerformanceGateConfig, seed: int, clock: Clock = time.perf_counter
    ) -> None:
        self._config = config
        self._runner = LoadRunner(config, seed, clock)

    async def run(self, candidate: ModelBackend, baseline: ModelBackend | None) -> GateResult:
        """Load both, compare, and say which limits the candidate broke."""
        ours, theirs = await self._runner.run(candidate, baseline)
        our_metrics = ours.metrics()
        their_metrics = theirs.metrics() if theirs is not None else None
        checks = limits(self._config, our_metrics, their_metrics)
        failed = [c for c in checks if not c.passed]
        passed = len(checks) - len(failed)
        if failed:
            reason = "performance failed: " + "; ".join(c.describe() for c in failed)
        else:
            compared = "" if theirs is not None else " (no production version to compare)"
            reason = f"performance passed: {passed} checks{compared}"
        return GateResult(
            name="performance",
            passed=not failed,
            reason=reason,
            score=passed / len(checks),
            threshold=1.0,
            failures=_failures(checks, ours),
            metrics=our_metrics,
            baseline_metrics=their_metrics or {},
        )
