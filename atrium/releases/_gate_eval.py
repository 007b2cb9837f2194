"""The task and safety gates: datasets run on the candidate and production, scores compared."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from atrium.releases._gate_calls import bounded_chat
from atrium.releases._gate_data import EvalCase, EvalDataset, load_dataset, score_case
from atrium.releases._gate_types import (
    MAX_FAILURES,
    CaseFailure,
    EvalGateConfig,
    GateName,
    GateResult,
    clip,
)
from atrium.runtime.base import ModelBackend
from atrium.runtime.schema import ChatCompletionRequest


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """One case answered by one model."""

    case: EvalCase
    passed: bool
    got: str


def load_gate_datasets(config: EvalGateConfig) -> list[EvalDataset]:
    """The gate's datasets, validated, cut to ``max_cases`` each."""
    datasets = [load_dataset(name) for name in config.datasets]
    if config.max_cases is None:
        return datasets
    return [d.model_copy(update={"cases": d.cases[: config.max_cases]}) for d in datasets]


@dataclass(frozen=True, slots=True)
class _Asker:
    """Puts the cases of a gate to one model, a bounded number at a time."""

    backend: ModelBackend
    config: EvalGateConfig
    seed: int
    slots: asyncio.Semaphore

    def request(self, dataset: EvalDataset, case: EvalCase) -> ChatCompletionRequest:
        """The case as a chat request: temperature 0, the gate's seed, a bounded budget."""
        budget = case.max_tokens or dataset.max_tokens
        if self.config.max_tokens is not None:
            budget = min(budget, self.config.max_tokens)
        messages = [{"role": "system", "content": case.system}] if case.system else []
        messages.append({"role": "user", "content": case.prompt})
        body = {"model": self.backend.name, "messages": messages, "max_tokens": budget}
        body |= {"temperature": 0.0, "seed": self.seed}
        return ChatCompletionRequest.model_validate(body)

    async def answer(self, dataset: EvalDataset, case: EvalCase) -> CaseOutcome:
        """The model's answer to one case, scored (a failed request fails the case)."""
        async with self.slots:
            outcome = await bounded_chat(
                self.backend, self.request(dataset, case), self.config.timeout_s
            )
        if outcome.error is not None:
            return CaseOutcome(case, passed=False, got=f"error: {outcome.error}")
        return CaseOutcome(
            case, passed=score_case(case, outcome.content), got=clip(outcome.content)
        )


async def evaluate(
    backend: ModelBackend, datasets: list[EvalDataset], config: EvalGateConfig, seed: int
) -> dict[str, list[CaseOutcome]]:
    """Every case of every dataset answered by ``backend``, keyed by dataset name."""
    asker = _Asker(backend, config, seed, asyncio.Semaphore(config.concurrency))
    results: dict[str, list[CaseOutcome]] = {}
    for dataset in datasets:
        answers = await asyncio.gather(*(asker.answer(dataset, c) for c in dataset.cases))
        results[dataset.name] = list(answers)
    return results


def _share(outcomes: list[CaseOutcome]) -> float:
    return sum(o.passed for o in outcomes) / len(outcomes) if outcomes else 0.0


@dataclass(frozen=True, slots=True)
class _Shortfall:
    dataset: str
    text: str


def _shortfalls(
    name: str,
    score: float,
    baseline: float | None,
    config: EvalGateConfig,
) -> list[_Shortfall]:
    found: list[_Shortfall] = []
    if baseline is not None and score < baseline - config.max_drop - 1e-9:
        short = baseline - config.max_drop - score
        text = (
            f"{name} scored {score:.2f} against production's {baseline:.2f} "
            f"(allowed drop {config.max_drop:.2f}; short by {short:.2f})"
        )
        found.append(_Shortfall(name, text))
    floor = config.min_scores.get(name, config.min_score)
    if floor is not None and score < floor - 1e-9:
        text = (
            f"{name} scored {score:.2f}, below the floor {floor:.2f} (short by {floor - score:.2f})"
        )
        found.append(_Shortfall(name, text))
    return found


def _failures(
    dataset: str, candidate: list[CaseOutcome], baseline: list[CaseOutcome] | None
) -> list[CaseFailure]:
    """The candidate's failing cases, those production passed (regressions) first."""
    base = {o.case.id: o for o in baseline or []}
    failed = [o for o in candidate if not o.passed]
    failed.sort(key=lambda o: not (o.case.id in base and base[o.case.id].passed))
    return [
        CaseFailure(
            case=f"{dataset}/{o.case.id}",
            input=clip(o.case.prompt),
            expected=clip(o.case.expectation()),
            got=o.got,
            baseline_got=base[o.case.id].got if o.case.id in base else None,
            regressed=base[o.case.id].passed if o.case.id in base else None,
        )
        for o in failed
    ]


def _regressed(failures: list[CaseFailure], datasets: set[str]) -> list[str]:
    return [f.case for f in failures if f.case.split("/", 1)[0] in datasets and f.regressed]


def judge(
    gate: GateName,
    config: EvalGateConfig,
    candidate: dict[str, list[CaseOutcome]],
    baseline: dict[str, list[CaseOutcome]] | None,
) -> GateResult:
    """Compare the candidate's scores with production's and the floors."""
    metrics = {name: _share(outcomes) for name, outcomes in candidate.items()}
    base_metrics = {n: _share(o) for n, o in baseline.items()} if baseline else {}
    shortfalls = [
        s
        for name, score in metrics.items()
        for s in _shortfalls(name, score, base_metrics.get(name), config)
    ]
    failures = [
        f
        for name, outcomes in candidate.items()
        for f in _failures(name, outcomes, baseline.get(name) if baseline else None)
    ]
    everything = [o for outcomes in candidate.values() for o in outcomes]
    score = _share(everything)
    base_score = _share([o for v in baseline.values() for o in v]) if baseline else None
    threshold = _threshold(config, base_score)
    reason = _reason(
        gate, shortfalls, failures, score=score, base_score=base_score, cases=len(everything)
    )
    return GateResult(
        name=gate,
        passed=not shortfalls,
        reason=reason,
        score=score,
        baseline_score=base_score,
        threshold=threshold,
        failures=_ordered(failures, {s.dataset for s in shortfalls})[:MAX_FAILURES],
        metrics=metrics,
        baseline_metrics=base_metrics,
    )


def _threshold(config: EvalGateConfig, base_score: float | None) -> float | None:
    limits = [base_score - config.max_drop] if base_score is not None else []
    limits += [config.min_score] if config.min_score is not None else []
    return max(limits) if limits else None


def _ordered(failures: list[CaseFailure], short: set[str]) -> list[CaseFailure]:
    """Failures of the datasets that fell short first (stable within each group)."""
    return sorted(failures, key=lambda f: f.case.split("/", 1)[0] not in short)


def _reason(
    gate: GateName,
    shortfalls: list[_Shortfall],
    failures: list[CaseFailure],
    *,
    score: float,
    base_score: float | None,
    cases: int,
) -> str:
    if not shortfalls:
        against = f" against production's {base_score:.2f}" if base_score is not None else ""
        return f"{gate} passed: {score:.2f}{against} over {cases} cases"
    short = {s.dataset for s in shortfalls}
    named = _regressed(failures, short) or [
        f.case for f in failures if f.case.split("/", 1)[0] in short
    ]
    listed = ", ".join(named[:10]) + (f" and {len(named) - 10} more" if len(named) > 10 else "")
    kind = "regressed cases" if _regressed(failures, short) else "failing cases"
    cases_text = f"; {kind}: {listed}" if named else ""
    return f"{gate} failed: " + "; ".join(s.text for s in shortfalls) + cases_text


async def run_eval_gate(
    gate: GateName,
    config: EvalGateConfig,
    datasets: list[EvalDataset],
    *,
    candidate: ModelBackend,
    baseline: ModelBackend | None,
    seed: int,
) -> GateResult:
    """Run ``datasets`` on both models (concurrently: they are separate deployments) and judge."""
    if baseline is None:
        return judge(gate, config, await evaluate(candidate, datasets, config, seed), None)
    ours, theirs = await asyncio.gather(
        evaluate(candidate, datasets, config, seed), evaluate(baseline, datasets, config, seed)
    )
    return judge(gate, config, ours, theirs)
