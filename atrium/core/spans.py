"""The seam through which services open trace spans without depending on a tracer.

A service takes a :data:`SpanFactory` (``Tracing.span`` when tracing is on) and calls
it around a step: ``with span("rag.embed", model=name): ...``. The default,
:func:`no_span`, opens nothing, so with tracing off no span object is ever made.

The keyword ``links`` (W3C ``traceparent`` strings) is not an attribute: the span then
starts a trace of its own, linked to those spans (work that outlives the request that
asked for it, such as a durable workflow run resumed hours later).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

#: Opens a child span of the current one named ``name`` with ``attributes`` (or, given
#: ``links``, the root of a new trace linked to them).
SpanFactory = Callable[..., AbstractContextManager[Any]]


def no_span(name: str, **attributes: Any) -> AbstractContextManager[None]:
    """No span (tracing is off)."""
    return contextlib.nullcontext()
