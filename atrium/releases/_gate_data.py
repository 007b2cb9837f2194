"""Evaluation datasets of the task and safety gates: schema, loading and scoring.

A dataset is a YAML file (bundled ones live in ``atrium/releases/gate_data``): a name, a
token budget, optional ``defaults`` merged into every case, and cases. A case is a prompt
(with an optional system message) and how its answer is scored:

- ``exact``: the answer, trimmed of spaces, quotes and final punctuation, equals one of
  ``expected`` (case-insensitive);
- ``contains``: one of ``expected`` appears in the answer as a whole word or phrase;
- ``number``: the last number in the answer equals ``expected``;
- ``regex``: ``pattern`` matches somewhere (case-insensitive unless it says otherwise);
- ``rubric``: every ``required`` pattern matches, at least one ``any_of`` pattern (if
  any are given) matches, and no ``forbidden`` pattern does.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atrium.core.errors import InvalidRequestError

Scoring = Literal["exact", "contains", "number", "regex", "rubric"]
_FLAGS = re.IGNORECASE | re.MULTILINE
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_TRIM = " \t\r\n\"'`.!?,;:*"


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        msg = f"invalid regular expression {pattern!r}: {exc}"
        raise ValueError(msg) from exc


class EvalCase(BaseModel):
    """One prompt and how its answer is scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    prompt: str = Field(min_length=1, max_length=8000)
    system: str | None = Field(None, max_length=8000)
    scoring: Scoring
    expected: list[str] = Field(default_factory=list)
    pattern: str | None = None
    required: list[str] = Field(default_factory=list)
    any_of: list[str] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(None, ge=1, le=4096)

    @field_validator("expected", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        """One expectation or many; numbers in YAML are read as their text."""
        values = value if isinstance(value, list) else [value]
        return [
            str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values
        ]

    @model_validator(mode="after")
    def _scorable(self) -> EvalCase:
        needs = {
            "exact": bool(self.expected),
            "contains": bool(self.expected),
            "number": bool(self.expected) and all(_NUMBER.fullmatch(e) for e in self.expected),
            "regex": self.pattern is not None,
            "rubric": bool(self.required or self.any_of or self.forbidden),
        }
        if not needs[self.scoring]:
            what = {"regex": "a pattern", "rubric": "required, any_of or forbidden patterns"}
            need = what.get(
                self.scoring, "expected (numbers)" if self.scoring == "number" else "expected"
            )
            msg = f"case {self.id!r}: {self.scoring} scoring needs {need}"
            raise ValueError(msg)
        for pattern in [
            *self.required,
            *self.any_of,
            *self.forbidden,
            *([self.pattern] if self.pattern else []),
        ]:
            _compile(pattern)
        return self

    def expectation(self) -> str:
        """What a passing answer looks like, for a report."""
        if self.scoring == "regex":
            return f"matches /{self.pattern}/"
        if self.scoring != "rubric":
            return f"{self.scoring}: {' | '.join(self.expected)}"
        parts = [f"matches /{p}/" for p in self.required]
        parts += [f"one of {' | '.join(f'/{p}/' for p in self.any_of)}"] if self.any_of else []
        parts += [f"not /{p}/" for p in self.forbidden]
        return "; ".join(parts)


def _normalise(text: str) -> str:
    return " ".join(text.strip(_TRIM).split()).casefold()


def _as_number(text: str) -> float:
    return float(text.replace(",", "."))


def score_case(case: EvalCase, answer: str) -> bool:
    """Whether ``answer`` passes ``case``."""
    if case.scoring == "exact":
        return _normalise(answer) in {_normalise(e) for e in case.expected}
    if case.scoring == "contains":
        words = (rf"(?<!\w){re.escape(_normalise(e))}(?!\w)" for e in case.expected)
        return any(re.search(w, _normalise(answer)) for w in words)
    if case.scoring == "number":
        numbers = _NUMBER.findall(answer)
        return bool(numbers) and _as_number(numbers[-1]) in {_as_number(e) for e in case.expected}
    if case.scoring == "regex":
        return _compile(case.pattern or "").search(answer) is not None
    return (
        all(_compile(p).search(answer) for p in case.required)
        and (not case.any_of or any(_compile(p).search(answer) for p in case.any_of))
        and not any(_compile(p).search(answer) for p in case.forbidden)
    )


class EvalDataset(BaseModel):
    """A named set of cases for the task or safety gate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = ""
    gate: Literal["tasks", "safety"]
    max_tokens: int = Field(32, ge=1, le=4096)
    cases: list[EvalCase] = Field(min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "defaults" not in data:
            return data
        defaults = data["defaults"] or {}
        cases = data.get("cases") or []
        merged = [{**defaults, **c} if isinstance(c, dict) else c for c in cases]
        return {k: v for k, v in data.items() if k != "defaults"} | {"cases": merged}

    @model_validator(mode="after")
    def _unique_ids(self) -> EvalDataset:
        ids = [c.id for c in self.cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            msg = f"dataset {self.name!r} repeats case ids: {', '.join(duplicates)}"
            raise ValueError(msg)
        return self


def bundled_datasets() -> list[str]:
    """Names of the datasets shipped in ``atrium/releases/gate_data``."""
    folder = resources.files("atrium.releases").joinpath("gate_data")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _read(name: str) -> tuple[str, str]:
    """(source label, YAML text) of a bundled name or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            msg = f"gate dataset file not found: {name}"
            raise InvalidRequestError(msg, param="datasets")
        return str(path), path.read_text(encoding="utf-8")
    if name not in bundled_datasets():
        known = ", ".join(bundled_datasets())
        msg = f"unknown gate dataset {name!r}; bundled ones are: {known} (or give a .yaml path)"
        raise InvalidRequestError(msg, param="datasets")
    resource = resources.files("atrium.releases").joinpath("gate_data", f"{name}.yaml")
    return f"gate_data/{name}.yaml", resource.read_text(encoding="utf-8")


def load_dataset(name: str) -> EvalDataset:
    """A bundled dataset by name, or a dataset file by path, validated."""
    source, text = _read(name)
    try:
        return EvalDataset.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        msg = f"gate dataset {source} is invalid: {exc}"
        raise InvalidRequestError(msg, param="datasets") from exc
