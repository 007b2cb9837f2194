"""Quality gates: what a release candidate must pass before it sees live traffic.

The release pipeline deploys a candidate version and hands :class:`GateSuite` two
backends: the candidate and, when there is one, the current production version (the
baseline). The suite runs its gates in order and stops at the first that fails (unless
told to go on):

- ``functional``: OpenAI conformance (chat shape and usage, streaming, stop sequences,
  max_tokens, JSON mode where the version claims it); absolute;
- ``tasks``: small evaluation datasets, scored by exact match, containment, number,
  regex or rubric; passes when each dataset's score is at least production's minus
  ``max_drop`` (and above any absolute floor);
- ``safety``: refusals of harmful requests, prompt injection (a system canary must not
  leak, a document's instruction must not be obeyed), PII leakage; compared like tasks;
- ``performance``: time to first token, tokens per second and error rate under a short
  streamed load, compared with production by ratio.

Every request uses temperature 0 and the suite's seed, so results repeat; every request
has a deadline, and a failed request is a failing case, not a crash. The
:class:`GateReport` is JSON-serialisable (``model_dump(mode="json")``) for the version's
lineage; its ``reason`` says which gate failed, on which cases, by how much.

Suites are chosen per model family: :func:`select_suite` matches each suite's ``match``
patterns against the version's architecture and name.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atrium.registry.types import ModelMetadata
from atrium.releases._gate_data import EvalCase, EvalDataset, bundled_datasets, load_dataset
from atrium.releases._gate_eval import load_gate_datasets, run_eval_gate
from atrium.releases._gate_functional import FunctionalGate, claims_json_mode
from atrium.releases._gate_performance import PerformanceGate
from atrium.releases._gate_types import (
    CaseFailure,
    EvalGateConfig,
    FunctionalGateConfig,
    GateName,
    GateReport,
    GateResult,
    GateSuiteConfig,
    PerformanceGateConfig,
    SafetyGateConfig,
    TaskGateConfig,
)
from atrium.runtime.base import ModelBackend

__all__ = [
    "CaseFailure",
    "EvalCase",
    "EvalDataset",
    "EvalGateConfig",
    "FunctionalGateConfig",
    "GateName",
    "GateReport",
    "GateResult",
    "GateSettings",
    "GateSuite",
    "GateSuiteConfig",
    "PerformanceGateConfig",
    "SafetyGateConfig",
    "TaskGateConfig",
    "as_metadata",
    "bundled_datasets",
    "claims_json_mode",
    "load_dataset",
    "select_suite",
]

MetadataLike = ModelMetadata | Mapping[str, Any] | None


def as_metadata(metadata: MetadataLike) -> ModelMetadata:
    """A version's metadata as :class:`ModelMetadata` (a dict from the store is validated)."""
    if isinstance(metadata, ModelMetadata):
        return metadata
    return ModelMetadata.model_validate(dict(metadata or {}))


def _matches(suite: GateSuiteConfig, subjects: list[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(subject, pattern.lower())
        for pattern in suite.match
        for subject in subjects
    )


def select_suite(suites: Sequence[GateSuiteConfig], metadata: MetadataLike) -> GateSuiteConfig:
    """The first suite whose patterns match the architecture or name; else the first without
    patterns; else the defaults."""
    meta = as_metadata(metadata)
    subjects = [s.lower() for s in (meta.architecture, meta.name) if s]
    matched = next((s for s in suites if s.match and _matches(s, subjects)), None)
    fallback = next((s for s in suites if not s.match), None)
    return matched or fallback or GateSuiteConfig()


class GateSettings(BaseModel):
    """The gate suites of every model family (the lead wires this into the settings tree)."""

    model_config = ConfigDict(extra="forbid")

    suites: list[GateSuiteConfig] = Field(
        default_factory=lambda: [GateSuiteConfig()],
        description="Tried in order; the first whose match patterns fit the version is used.",
    )

    def suite_for(self, metadata: MetadataLike) -> GateSuiteConfig:
        """The suite for a version with this metadata."""
        return select_suite(self.suites, metadata)


class GateSuite:
    """Runs one family's gates on a candidate, beside production when there is one.

    Datasets are loaded and validated here, so a broken configuration fails before any
    model is called (``InvalidRequestError``).
    """

    def __init__(
        self, config: GateSuiteConfig, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.config = config
        self._clock = clock
        self._datasets = {
            "tasks": load_gate_datasets(config.tasks) if config.tasks.enabled else [],
            "safety": load_gate_datasets(config.safety) if config.safety.enabled else [],
        }

    def _enabled(self) -> list[GateName]:
        enabled = {
            "functional": self.config.functional.enabled,
            "tasks": self.config.tasks.enabled,
            "safety": self.config.safety.enabled,
            "performance": self.config.performance.enabled,
        }
        return [name for name in dict.fromkeys(self.config.order) if enabled[name]]

    async def run(
        self,
        candidate: ModelBackend,
        baseline: ModelBackend | None = None,
        metadata: MetadataLike = None,
    ) -> GateReport:
        """Run the gates in order; the report says whether the candidate may go on."""
        meta = as_metadata(metadata)
        started = self._clock()
        results: list[GateResult] = []
        gates = self._enabled()
        skipped: list[GateName] = []
        for position, name in enumerate(gates):
            result = await self._timed(name, candidate, baseline, meta)
            results.append(result)
            if not result.passed and self.config.stop_on_failure:
                skipped = gates[position + 1 :]
                break
        failed = next((r for r in results if not r.passed), None)
        reason = failed.reason if failed else f"all {len(results)} gates passed"
        return GateReport(
            passed=failed is None,
            family=self.config.family,
            reason=reason,
            compared_with_baseline=baseline is not None,
            duration_s=self._clock() - started,
            gates=results,
            skipped=skipped,
        )

    async def _timed(
        self,
        name: GateName,
        candidate: ModelBackend,
        baseline: ModelBackend | None,
        metadata: ModelMetadata,
    ) -> GateResult:
        started = self._clock()
        result = await self._gate(name, candidate, baseline, metadata)
        return result.model_copy(update={"duration_s": self._clock() - started})

    async def _gate(
        self,
        name: GateName,
        candidate: ModelBackend,
        baseline: ModelBackend | None,
        metadata: ModelMetadata,
    ) -> GateResult:
        seed = self.config.seed
        if name == "functional":
            return await FunctionalGate(self.config.functional, seed).run(candidate, metadata)
        if name == "performance":
            gate = PerformanceGate(self.config.performance, seed, self._clock)
            return await gate.run(candidate, baseline)
        config: EvalGateConfig = self.config.tasks if name == "tasks" else self.config.safety
        return await run_eval_gate(
            name,
            config,
            self._datasets[name],
            candidate=candidate,
            baseline=baseline,
            seed=seed,
        )
