"""Templates and expressions that cannot reach the file system, the network or Python.

Templates are Jinja2 in an immutable sandbox (no attribute access to Python internals, no
mutation of inputs, no imports, no file loaders) with a size cap on the output.
Expressions are JMESPath (a query language over JSON with no side effects at all) or,
where arithmetic is needed, a Jinja2 expression in the same sandbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

import jmespath
import jmespath.exceptions
from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from atrium.workflows.blocks.base import BlockError

MAX_RENDERED_CHARS = 1_000_000
MAX_RANGE = 10_000


class _Environment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with ``range`` capped and no template loading."""

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, loader=None)
        self.globals = {"range": _safe_range, "dict": dict, "lipsum": None}
        self.globals.pop("lipsum")


def _safe_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        msg = f"range too large (at most {MAX_RANGE} items)"
        raise SecurityError(msg)
    return values


@lru_cache(maxsize=1)
def _environment() -> _Environment:
    return _Environment()


@lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    env = _environment()
    parsed = env.parse(source)
    # {% include %}, {% import %} and {% extends %} would read templates from a loader.
    for node_type in (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends):
        if next(parsed.find_all(node_type), None) is not None:
            msg = "templates may not include, import or extend other templates"
            raise SecurityError(msg)
    return env.from_string(source)


def check_template(source: str) -> str | None:
    """The reason a template cannot compile, or None when it is fine."""
    try:
        _compiled(source)
    except (TemplateError, SecurityError) as exc:
        return str(exc)
    return None


def render(source: str, scope: Mapping[str, Any]) -> str:
    """Render a template; BlockError with the reason when it fails or grows too big."""
    try:
        text = str(_compiled(source).render(dict(scope)))
    except SecurityError as exc:
        raise BlockError(f"template refused: {exc}") from None
    except TemplateError as exc:
        raise BlockError(f"template error: {exc}") from None
    if len(text) > MAX_RENDERED_CHARS:
        msg = f"rendered template too large ({len(text)} characters)"
        raise BlockError(msg)
    return text


Language = Literal["jmespath", "jinja"]


@lru_cache(maxsize=512)
def _expression(source: str, language: Language) -> Any:
    if language == "jinja":
        return _environment().compile_expression(source, undefined_to_none=False)
    return jmespath.compile(source)


def check_expression(source: str, language: Language = "jmespath") -> str | None:
    """The reason an expression cannot compile, or None when it is fine."""
    try:
        _expression(source, language)
    except jmespath.exceptions.JMESPathError as exc:
        return str(exc).strip()
    except TemplateError as exc:
        return str(exc)
    return None


def evaluate(source: str, scope: Mapping[str, Any], language: Language = "jmespath") -> Any:
    """Evaluate an expression over the scope; BlockError when it fails.

    JMESPath queries and reshapes JSON; a Jinja2 expression (in the same immutable
    sandbox as templates) adds arithmetic and filters: ``price * qty``, ``rows | length``.
    """
    try:
        if language == "jinja":
            return _jsonable(_expression(source, language)(**dict(scope)))
        return _expression(source, language).search(dict(scope))
    except jmespath.exceptions.JMESPathError as exc:
        raise BlockError(f"expression error: {str(exc).strip()}") from None
    except SecurityError as exc:
        raise BlockError(f"expression refused: {exc}") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise BlockError(f"expression error: {exc}") from None


def _jsonable(value: Any) -> Any:
    """Results must be JSON (they are recorded and passed on): no Undefined, no objects."""
    if isinstance(value, Undefined):
        msg = "the expression names something undefined"
        raise BlockError(msg)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_jsonable(v) for v in value]
    msg = f"the expression produced a {type(value).__name__}, not JSON"
    raise BlockError(msg)


def truthy(value: Any) -> bool:
    """JMESPath's notion of truth: false, null, "" , [] and {} are false; 0 is true."""
    return value not in (False, None, "", [], {})
