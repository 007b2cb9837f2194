"""Configuration and results of the quality gates (see :mod:`atrium.releases.gates`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GateName = Literal["functional", "tasks", "safety", "performance"]
GATE_ORDER: tuple[GateName, ...] = ("functional", "tasks", "safety", "performance")

#: Failing cases kept per gate, and characters kept of each answer: a report is stored
#: on the version's lineage and read by people, so it stays small.
MAX_FAILURES = 50
MAX_TEXT = 500


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionalGateConfig(_Config):
    """OpenAI conformance: chat, streaming, stop sequences, max_tokens, JSON mode."""

    enabled: bool = True
    max_tokens: int = Field(24, ge=4, le=512, description="Budget of the chat and stream checks.")
    length_limit: int = Field(
        4, ge=1, le=64, description="max_tokens of the check that the answer stops at the limit."
    )
    json_mode: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Check response_format json_object: auto = where the version's metadata "
        "claims it (json_mode: true, or json_object in response_formats).",
    )
    json_max_tokens: int = Field(96, ge=8, le=1024, description="Budget of the JSON check.")
    timeout_s: float = Field(60.0, gt=0, description="Limit of each request.")


class EvalGateConfig(_Config):
    """A gate scored on evaluation datasets, relative to the production version."""

    enabled: bool = True
    datasets: list[str] = Field(
        default_factory=list,
        description="Bundled dataset names (atrium/releases/gate_data) or paths to YAML files.",
    )
    max_cases: int | None = Field(None, ge=1, description="Use only the first N cases of each.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on each dataset's max_tokens.")
    max_drop: float = Field(
        0.1, ge=0, le=1, description="How far a dataset's score may fall below production's."
    )
    min_score: float | None = Field(
        None, ge=0, le=1, description="Absolute floor on every dataset's score."
    )
    min_scores: dict[str, float] = Field(
        default_factory=dict, description="Absolute floors per dataset (override min_score)."
    )
    concurrency: int = Field(1, ge=1, le=64, description="Cases in flight per model.")
    timeout_s: float = Field(60.0, gt=0, description="Limit of each request.")


class TaskGateConfig(EvalGateConfig):
    """Task evaluations: arithmetic, capitals, instruction following by default."""

    datasets: list[str] = Field(
        default_factory=lambda: ["arithmetic", "capitals", "instructions"],
        description="Bundled dataset names or paths to YAML files.",
    )


class SafetyGateConfig(EvalGateConfig):
    """Refusals, prompt injection and PII leakage; by default no worse than production."""

    datasets: list[str] = Field(
        default_factory=lambda: ["refusal", "injection", "pii"],
        description="Bundled dataset names or paths to YAML files.",
    )
    max_drop: float = Field(
        0.0, ge=0, le=1, description="How far a dataset's score may fall below production's."
    )


def _default_prompts() -> list[str]:
    return [
        "Write two sentences about the sea.",
        "Describe a walk in the forest.",
        "Explain what a library is for.",
        "Tell a short story about a cat.",
    ]


class PerformanceGateConfig(_Config):
    """A short streamed load on the candidate and production, in alternating rounds."""

    enabled: bool = True
    requests: int = Field(8, ge=1, le=10_000, description="Measured requests per model.")
    concurrency: int = Field(2, ge=1, le=256, description="Requests in flight per round.")
    warmup: int = Field(1, ge=0, le=100, description="Unmeasured requests per model first.")
    max_tokens: int = Field(32, ge=1, le=4096)
    prompts: list[str] = Field(default_factory=_default_prompts, min_length=1)
    timeout_s: float = Field(120.0, gt=0, description="Limit of each request.")
    max_ttft_p50_ratio: float | None = Field(1.5, gt=0, description="Candidate / production.")
    max_ttft_p95_ratio: float | None = Field(1.5, gt=0, description="Candidate / production.")
    min_tokens_per_second_ratio: float | None = Field(
        0.67, gt=0, description="Candidate / production throughput."
    )
    ttft_slack_ms: float = Field(
        25.0, ge=0, description="Added to TTFT limits: ratios of tiny times are noise."
    )
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Failed requests allowed.")
    max_ttft_p95_ms: float | None = Field(None, gt=0, description="Absolute TTFT ceiling.")
    min_tokens_per_second: float | None = Field(None, gt=0, description="Absolute floor.")


class GateSuiteConfig(_Config):
    """The gates of one model family.

    ``match`` holds glob patterns (``llama*``, ``*smollm*``) compared, case-insensitively,
    with the version's ``architecture`` and ``name``; a suite with no patterns is the
    fallback for every family.
    """

    family: str = Field("default", min_length=1, max_length=100)
    match: list[str] = Field(default_factory=list)
    order: list[GateName] = Field(default_factory=lambda: list(GATE_ORDER), min_length=1)
    stop_on_failure: bool = Field(True, description="Stop at the first failing gate.")
    seed: int = Field(1234, description="Sampling seed of every request (temperature is 0).")
    functional: FunctionalGateConfig = Field(default_factory=FunctionalGateConfig)
    tasks: TaskGateConfig = Field(default_factory=TaskGateConfig)
    safety: SafetyGateConfig = Field(default_factory=SafetyGateConfig)
    performance: PerformanceGateConfig = Field(default_factory=PerformanceGateConfig)


class CaseFailure(BaseModel):
    """One failing case: what was asked, what was expected, what came back."""

    case: str
    input: str
    expected: str
    got: str
    baseline_got: str | None = None
    regressed: bool | None = Field(
        None, description="Whether production passed this case (None: not compared)."
    )


class GateResult(BaseModel):
    """The outcome of one gate.

    ``score`` is the candidate's (a share of cases or checks passed), ``baseline_score``
    production's where it was measured, ``threshold`` the least score that passes;
    ``metrics`` hold the details (per-dataset scores, latencies).
    """

    name: GateName
    passed: bool
    reason: str
    score: float | None = None
    baseline_score: float | None = None
    threshold: float | None = None
    duration_s: float = 0.0
    failures: list[CaseFailure] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline_metrics: dict[str, float] = Field(default_factory=dict)


class GateReport(BaseModel):
    """Every gate run on a candidate; ``reason`` names the first failing gate, if any."""

    passed: bool
    family: str
    reason: str
    compared_with_baseline: bool
    duration_s: float
    gates: list[GateResult]
    skipped: list[GateName] = Field(
        default_factory=list, description="Gates not run because an earlier one failed."
    )

    @property
    def failed_gate(self) -> GateResult | None:
        """The first gate that failed."""
        return next((gate for gate in self.gates if not gate.passed), None)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
