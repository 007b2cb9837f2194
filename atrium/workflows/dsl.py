"""The workflow definition language: a versioned graph of typed blocks, as YAML or JSON.

A workflow is nodes (a block type, its config, retry / timeout / error policy) joined by
edges in React Flow's shape: ``source`` + ``source_handle`` (an output port, or a control
handle such as ``true``, ``false``, ``error``) to ``target`` + ``target_handle`` (an input
port; none for a control-only edge). Workflow inputs are typed and checked before a run
starts; outputs name node ports. The pydantic models here are the single schema: the API
validates against them and the builder UI renders its forms from :func:`workflow_json_schema`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atrium.core.errors import InvalidRequestError

IDENT = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
#: Workflow names that would be shadowed by fixed routes under /v1/workflows.
RESERVED_NAMES = frozenset(
    {"runs", "blocks", "schema", "validate", "triggers", "import", "templates"}
)
_IDENT_RE = re.compile(IDENT)

#: Port types. ``array[T]`` is an array of T; ``any`` fits everything.
SCALAR_TYPES = ("any", "string", "number", "integer", "boolean", "object", "array")
_TYPE_RE = re.compile(r"^(any|string|number|integer|boolean|object|array)(\[(.+)\])?$")


def parse_type(spec: str) -> tuple[str, str | None]:
    """``"array[string]"`` -> ``("array", "string")``; raises ValueError when unknown."""
    match = _TYPE_RE.match(spec.strip())
    if match is None or (match.group(3) is not None and match.group(1) != "array"):
        msg = f"unknown type {spec!r}: use one of {', '.join(SCALAR_TYPES)} or array[T]"
        raise ValueError(msg)
    item = match.group(3)
    if item is not None:
        parse_type(item)
    return match.group(1), item


def type_fits(source: str, target: str) -> bool:
    """Whether a value of type ``source`` may flow into a port of type ``target``."""
    s_kind, s_item = parse_type(source)
    t_kind, t_item = parse_type(target)
    if "any" in (s_kind, t_kind):
        return True
    if s_kind == t_kind:
        if t_kind != "array" or t_item is None or s_item is None:
            return True
        return type_fits(s_item, t_item)
    return s_kind == "integer" and t_kind == "number"


def value_fits(value: Any, spec: str) -> bool:
    """Whether a JSON value has the declared type (booleans are not numbers)."""
    kind, item = parse_type(spec)
    if kind == "any":
        return True
    if kind == "array":
        return isinstance(value, list) and (item is None or all(value_fits(v, item) for v in value))
    checks: dict[str, Any] = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
    }
    return bool(checks[kind](value))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PortSpec(_Strict):
    """A typed input or output of a block, or an input of the workflow itself."""

    type: str = Field("any", description="any, string, number, integer, boolean, object, array[T]")
    required: bool = Field(True, description="Whether a value must arrive.")
    default: Any = Field(None, description="The value when none arrives.")
    description: str = Field("", description="What the port carries.")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        parse_type(value)
        return value.strip()


class ErrorStrategy(StrEnum):
    """What a block's failure (after its retries) does to the run."""

    FAIL = "fail"  # the run ends failed with the block's error
    BRANCH = "branch"  # the block's `error` handle fires; its normal edges do not
    DEFAULT = "default"  # the block answers `default_output` and the run goes on
    CONTINUE = "continue"  # the block answers nothing; successors needing it are skipped


class RetryPolicy(_Strict):
    """Attempts with exponential backoff and full jitter, inside one durable step."""

    attempts: int = Field(1, ge=1, le=20)
    backoff_seconds: float = Field(1.0, ge=0, le=3600)
    backoff_rate: float = Field(2.0, ge=1, le=10)
    max_backoff_seconds: float = Field(60.0, ge=0, le=3600)


class NodeSpec(_Strict):
    """One block in the graph."""

    id: str = Field(pattern=IDENT)
    type: str = Field(description="The block type (see GET /v1/workflows/blocks).")
    name: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float | None = Field(None, gt=0, le=86_400)
    on_error: ErrorStrategy = ErrorStrategy.FAIL
    default_output: dict[str, Any] = Field(
        default_factory=dict, description="Outputs used when on_error is 'default'."
    )
    position: dict[str, float] | None = Field(None, description="Canvas position (builder UI).")


class EdgeSpec(_Strict):
    """``source.source_handle`` -> ``target.target_handle`` (no target handle: control only)."""

    id: str | None = None
    source: str
    source_handle: str
    target: str
    target_handle: str | None = None


class OutputSpec(_Strict):
    """A workflow output: a node's output port (``node.port``)."""

    source: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*$")
    description: str = ""


class WorkflowSpec(_Strict):
    """A workflow definition, as saved (one version of it)."""

    schema_version: Literal[1] = 1
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="Unique; used in URLs (letters, digits, _ . -).",
    )
    description: str = ""
    inputs: dict[str, PortSpec] = Field(default_factory=dict)
    outputs: dict[str, OutputSpec] = Field(default_factory=dict)
    variables: dict[str, Any] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in RESERVED_NAMES:
            msg = f"{value!r} is reserved (it names an API path); choose another name"
            raise ValueError(msg)
        return value

    @field_validator("inputs", "outputs", "variables")
    @classmethod
    def _identifier_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [key for key in value if not _IDENT_RE.match(key)]
        if bad:
            msg = f"names must be identifiers: {bad}"
            raise ValueError(msg)
        return value

    def node(self, node_id: str) -> NodeSpec:
        """The node with that id (KeyError when absent)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow definition (for the builder and for editors)."""
    return WorkflowSpec.model_json_schema()


def parse_workflow(data: Any) -> WorkflowSpec:
    """A definition from parsed JSON/YAML; every schema problem in one 400."""
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'workflow'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidRequestError(
            "invalid workflow: " + "; ".join(problems), param="definition", code="invalid_workflow"
        ) from None


def load_yaml(text: str) -> WorkflowSpec:
    """A definition from YAML (or JSON, which is YAML) text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequestError(f"not valid YAML: {exc}", param="definition") from None
    return parse_workflow(data)


def dump_yaml(spec: WorkflowSpec) -> str:
    """YAML text of a definition, stable key order, defaults left out."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("name", spec.name)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
