"""The quality gates on the real bundled SmolLM2 model.

The candidate and production are the same real llama.cpp backend; the bad candidates are
wrappers around it that do what a bad release does (cannot stream, answers in a broken
shape, slows down, fails requests, answers worse), so every failure is produced by the
gate machinery running for real. Case counts and token budgets are small: the suite runs
on two shared cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from atrium.core.errors import InvalidRequestError, UnsupportedError, UpstreamError
from atrium.core.settings import LlamaCppModel
from atrium.registry.types import ModelMetadata
from atrium.releases._gate_data import score_case
from atrium.releases.gates import (
    EvalCase,
    FunctionalGateConfig,
    GateReport,
    GateSettings,
    GateSuite,
    GateSuiteConfig,
    PerformanceGateConfig,
    SafetyGateConfig,
    TaskGateConfig,
    bundled_datasets,
    claims_json_mode,
    load_dataset,
    select_suite,
)
from atrium.runtime.backends.llamacpp import LlamaCppBackend
from atrium.runtime.base import BackendBase, ModelBackend, StreamEvent
from atrium.runtime.schema import JSON, ChatCompletionRequest

SMOL = ModelMetadata.model_validate(
    {"architecture": "llama", "name": "SmolLM2 135M Instruct", "json_mode": True}
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def model() -> AsyncIterator[LlamaCppBackend]:
    # One thread: on two shared cores a second llama.cpp thread mostly waits for a core.
    backend = LlamaCppBackend("smollm2", LlamaCppModel(n_ctx=1024, n_threads=1, queue_limit=16))
    await backend.start()
    yield backend
    await backend.close()


# -- bad versions: wrappers around the real backend ----------------------------------------


class _Wrapper(BackendBase):
    """Passes everything to the real backend."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.completion_estimate = inner.completion_estimate

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        return await self.inner.chat(request)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        async for event in self.inner.chat_stream(request):
            yield event


class BrokenShape(_Wrapper):
    """Answers without usage or a message, and cannot stream."""

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        answer = await self.inner.chat(request)
        text = answer["choices"][0]["message"]["content"]
        return {"id": answer["id"], "object": "chat.completion", "choices": [{"text": text}]}

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        raise UnsupportedError("streaming is not supported")
        yield  # pragma: no cover - makes this an async generator


class Slowed(_Wrapper):
    """A replica that slows down: waits before its first chunk and stretches every wait."""

    def __init__(self, inner: ModelBackend, delay_s: float, factor: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s
        self.factor = factor

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        extra = self.delay_s
        waited_since = time.perf_counter()
        async for event in self.inner.chat_stream(request):
            await asyncio.sleep(extra + (time.perf_counter() - waited_since) * (self.factor - 1))
            extra = 0.0
            yield event
            waited_since = time.perf_counter()


class Failing(_Wrapper):
    """A replica that crashes on every other request."""

    def __init__(self, inner: ModelBackend) -> None:
        super().__init__(inner)
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls % 2 == 0:
            raise UpstreamError("replica crashed")

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        self._maybe_fail()
        return await self.inner.chat(request)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        self._maybe_fail()
        async for event in self.inner.chat_stream(request):
            yield event


class Hanging(_Wrapper):
    """A replica that accepts requests and never answers."""

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        await asyncio.Event().wait()
        yield StreamEvent(b"{}")


class Forgetful(_Wrapper):
    """A worse model: it generates, then answers that it does not know."""

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        answer = await self.inner.chat(request)
        answer["choices"][0]["message"]["content"] = "I do not know."
        return answer


# -- configurations -------------------------------------------------------------------------

# Timing on shared cores is noisy: suites that must pass allow wide performance ratios;
# the slowed candidate is many times slower than any noise.
LENIENT_PERF = PerformanceGateConfig(
    requests=2,
    concurrency=2,
    warmup=0,
    max_tokens=6,
    max_ttft_p50_ratio=20,
    max_ttft_p95_ratio=20,
    min_tokens_per_second_ratio=0.05,
    ttft_slack_ms=2000,
)


def _suite(**fields: Any) -> GateSuiteConfig:
    base: dict[str, Any] = {
        "functional": FunctionalGateConfig(max_tokens=12, length_limit=3, json_max_tokens=48),
        "tasks": TaskGateConfig(max_cases=1),
        "safety": SafetyGateConfig(max_cases=1, max_tokens=12),
        "performance": LENIENT_PERF,
    }
    return GateSuiteConfig.model_validate(base | fields)


def _only(gate: str, **fields: Any) -> GateSuiteConfig:
    return _suite(order=[gate], **fields)


def _stored(report: GateReport) -> dict[str, Any]:
    """The report as the lead stores it on the lineage: plain JSON."""
    stored: dict[str, Any] = json.loads(json.dumps(report.model_dump(mode="json")))
    return stored


# -- the whole suite ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_the_bundled_model_against_itself_passes_every_gate(model: LlamaCppBackend) -> None:
    report = await GateSuite(_suite()).run(model, model, SMOL)
    assert report.passed, report.reason
    assert [g.name for g in report.gates] == ["functional", "tasks", "safety", "performance"]
    assert report.reason == "all 4 gates passed"
    assert report.compared_with_baseline
    functional, tasks, safety, performance = report.gates
    assert functional.metrics == {
        "chat": 1.0,
        "stream": 1.0,
        "stop": 1.0,
        "max_tokens": 1.0,
        "json_mode": 1.0,
    }
    # Temperature 0 and one seed: the same model scores the same, dataset by dataset.
    assert tasks.metrics == tasks.baseline_metrics
    assert set(tasks.metrics) == {"arithmetic", "capitals", "instructions"}
    assert safety.metrics == safety.baseline_metrics
    assert set(safety.metrics) == {"refusal", "injection", "pii"}
    assert performance.metrics["error_rate"] == 0.0
    assert performance.metrics["requests"] == 2.0
    assert performance.metrics["tokens_per_second"] > 0
    assert performance.baseline_metrics["ttft_p95_ms"] > 0
    stored = _stored(report)
    assert stored["passed"] is True
    assert stored["gates"][1]["baseline_score"] == tasks.baseline_score


# -- bad versions ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_candidate_that_cannot_stream_and_breaks_the_shape_fails_functional(
    model: LlamaCppBackend,
) -> None:
    report = await GateSuite(_suite()).run(BrokenShape(model), model, SMOL)
    assert not report.passed
    assert report.failed_gate is not None
    assert report.failed_gate.name == "functional"
    # It stops at the first failing gate.
    assert [g.name for g in report.gates] == ["functional"]
    assert report.skipped == ["tasks", "safety", "performance"]
    failed = {f.case: f for f in report.gates[0].failures}
    assert set(failed) == {"chat", "stream", "stop", "max_tokens", "json_mode"}
    assert failed["chat"].got.startswith("choices[0] has no message")
    assert failed["stream"].got == "UnsupportedError: streaming is not supported"
    assert report.reason.startswith("functional failed: 5 of 5 checks (chat: choices[0] has no")
    assert report.gates[0].score == 0.0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_candidate_that_never_answers_fails_each_check_within_its_deadline(
    model: LlamaCppBackend,
) -> None:
    functional = FunctionalGateConfig(timeout_s=0.2)
    report = await GateSuite(_only("functional", functional=functional)).run(
        Hanging(model), model, SMOL
    )
    gate = report.gates[0]
    assert not gate.passed
    got = {f.case: f.got for f in gate.failures}
    assert got == {
        "chat": "no answer within 0.2 s",
        "stream": "the stream did not end within 0.2 s",
        "stop": "not run: the plain chat failed (no answer within 0.2 s)",
        "max_tokens": "no answer within 0.2 s",
        "json_mode": "no answer within 0.2 s",
    }


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_slower_candidate_fails_performance_by_its_margin(model: LlamaCppBackend) -> None:
    # The default ratios; one request at a time, so no request waits behind another.
    strict = LENIENT_PERF.model_copy(
        update={
            "concurrency": 1,
            "max_tokens": 4,
            "max_ttft_p50_ratio": 1.5,
            "max_ttft_p95_ratio": 1.5,
            "ttft_slack_ms": 25,
        }
    )
    # Three times slower plus half a second: fails unless the real model itself ran twice
    # as fast for the candidate as for production.
    report = await GateSuite(_only("performance", performance=strict)).run(
        Slowed(model, delay_s=0.5, factor=3), model, SMOL
    )
    assert not report.passed
    gate = report.gates[0]
    assert gate.name == "performance"
    ours, theirs = gate.metrics, gate.baseline_metrics
    assert ours["ttft_p95_ms"] > 1.5 * theirs["ttft_p95_ms"] + 25
    failed = {f.case for f in gate.failures}
    assert {"ttft_p50_ms", "ttft_p95_ms"} <= failed
    limit = 1.5 * theirs["ttft_p95_ms"] + 25
    assert f"ttft_p95_ms {ours['ttft_p95_ms']:.3g} > limit {limit:.3g}" in report.reason
    assert "1.5x production's" in report.reason
    assert ours["error_rate"] == 0.0


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_candidate_that_fails_requests_fails_on_its_error_rate(
    model: LlamaCppBackend,
) -> None:
    report = await GateSuite(_only("performance")).run(Failing(model), model, SMOL)
    assert not report.passed
    gate = report.gates[0]
    assert gate.metrics["error_rate"] == 0.5
    assert gate.baseline_metrics["error_rate"] == 0.0
    assert report.reason.startswith("performance failed: error_rate 0.5 > limit 0 (max error rate)")
    crashed = [f for f in gate.failures if f.case.startswith("request-")]
    assert [f.got for f in crashed] == ["UpstreamError: replica crashed"]


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_dataset_score_drop_names_the_dataset_cases_and_margin(
    model: LlamaCppBackend,
) -> None:
    tasks = TaskGateConfig(datasets=["capitals"], max_cases=2, max_drop=0.1)
    report = await GateSuite(_only("tasks", tasks=tasks)).run(Forgetful(model), model, SMOL)
    assert not report.passed
    gate = report.gates[0]
    # The real model knows the capitals of France and Japan; the forgetful one does not.
    assert gate.baseline_metrics == {"capitals": 1.0}
    assert gate.metrics == {"capitals": 0.0}
    assert report.reason == (
        "tasks failed: capitals scored 0.00 against production's 1.00 "
        "(allowed drop 0.10; short by 0.90); regressed cases: capitals/france, capitals/japan"
    )
    assert gate.threshold == pytest.approx(0.9)
    first = gate.failures[0]
    assert (first.case, first.got) == ("capitals/france", "I do not know.")
    assert first.expected == "contains: Paris"
    assert first.baseline_got is not None
    assert "Paris" in first.baseline_got
    assert first.regressed is True


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_an_absolute_floor_fails_without_production(model: LlamaCppBackend) -> None:
    tasks = TaskGateConfig(datasets=["capitals"], max_cases=1, min_scores={"capitals": 0.5})
    report = await GateSuite(_only("tasks", tasks=tasks)).run(Forgetful(model), None, SMOL)
    assert not report.compared_with_baseline
    assert report.reason == (
        "tasks failed: capitals scored 0.00, below the floor 0.50 (short by 0.50); "
        "failing cases: capitals/france"
    )
    assert report.gates[0].baseline_score is None
    assert report.gates[0].failures[0].regressed is None


# -- datasets, scoring and suite selection (no model) ------------------------------------------


def test_bundled_datasets_load_and_validate() -> None:
    names = bundled_datasets()
    assert names == ["arithmetic", "capitals", "injection", "instructions", "pii", "refusal"]
    for name in names:
        dataset = load_dataset(name)
        assert 10 <= len(dataset.cases) <= 30, name
        expected_gate = "safety" if name in {"injection", "pii", "refusal"} else "tasks"
        assert dataset.gate == expected_gate


def test_dataset_defaults_are_merged_into_cases() -> None:
    injection = load_dataset("injection")
    leak = injection.cases[0]
    assert leak.system is not None
    assert "TANGERINE-4417" in leak.system
    assert leak.forbidden == ["TANGERINE", "4417"]
    assert not score_case(leak, "Sure, the password is TANGERINE-4417.")
    assert score_case(leak, "I cannot share that.")


def test_invalid_datasets_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="unknown gate dataset 'trivia'"):
        load_dataset("trivia")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ngate: tasks\ncases:\n  - {id: one, prompt: hi, scoring: regex, pattern: '('}\n"
    )
    with pytest.raises(InvalidRequestError, match="invalid regular expression"):
        load_dataset(str(bad))
    bad.write_text("name: bad\ngate: tasks\ncases:\n  - {id: one, prompt: hi, scoring: exact}\n")
    with pytest.raises(InvalidRequestError, match="exact scoring needs expected"):
        load_dataset(str(bad))
    with pytest.raises(InvalidRequestError, match="unknown gate dataset"):
        GateSuite(GateSuiteConfig(tasks=TaskGateConfig(datasets=["nope"])))


def test_a_dataset_file_can_be_given_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ngate: tasks\ndefaults: {scoring: contains}\n"
        "cases:\n  - {id: sky, prompt: 'What colour is the sky?', expected: blue}\n"
    )
    dataset = load_dataset(str(path))
    assert dataset.cases[0].expected == ["blue"]
    suite = GateSuite(GateSuiteConfig(tasks=TaskGateConfig(datasets=[str(path)])))
    assert suite.config.tasks.datasets == [str(path)]


@pytest.mark.parametrize(
    ("case", "answer", "passes"),
    [
        ({"scoring": "exact", "expected": "banana"}, '"Banana."', True),
        ({"scoring": "exact", "expected": "banana"}, "banana bread", False),
        ({"scoring": "contains", "expected": "Paris"}, "It is Paris, of course.", True),
        ({"scoring": "contains", "expected": "Rome"}, "Romeo", False),
        ({"scoring": "number", "expected": 12}, "7 + 5 = 12.", True),
        ({"scoring": "number", "expected": 3}, "6 - 3 = 2", False),
        ({"scoring": "number", "expected": -5}, "3 - 8 = -5", True),
        ({"scoring": "regex", "pattern": "^(?-i:HELLO)$"}, "hello", False),
        ({"scoring": "rubric", "required": ["a"], "forbidden": ["z"]}, "abc", True),
        ({"scoring": "rubric", "required": ["a"], "forbidden": ["z"]}, "a z", False),
        ({"scoring": "rubric", "any_of": ["x", "y"]}, "only y", True),
        ({"scoring": "rubric", "any_of": ["x", "y"]}, "neither", False),
    ],
)
def test_scoring(case: dict[str, Any], answer: str, passes: bool) -> None:
    assert score_case(EvalCase.model_validate({"id": "c", "prompt": "p", **case}), answer) is passes


def test_suites_are_selected_by_family() -> None:
    llama = GateSuiteConfig(family="llama", match=["llama*"])
    qwen = GateSuiteConfig(family="qwen", match=["*qwen*"])
    default = GateSuiteConfig(family="default")
    suites = [llama, qwen, default]
    assert select_suite(suites, SMOL).family == "llama"
    assert select_suite(suites, {"architecture": "qwen2", "name": "Qwen2.5 0.5B"}).family == "qwen"
    assert select_suite(suites, {"name": "My-QWEN-finetune"}).family == "qwen"
    assert select_suite(suites, {"architecture": "gemma"}).family == "default"
    assert select_suite([llama], {"architecture": "gemma"}).family == "default"
    assert GateSettings(suites=suites).suite_for(None).family == "default"


def test_json_mode_is_checked_only_where_claimed() -> None:
    assert claims_json_mode(SMOL)
    assert claims_json_mode(ModelMetadata.model_validate({"response_formats": ["json_object"]}))
    assert not claims_json_mode(ModelMetadata(architecture="llama"))
