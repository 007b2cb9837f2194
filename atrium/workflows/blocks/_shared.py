"""Helpers the block modules share: template checks, the template scope, bounded reads."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from atrium.core.errors import NotFoundError
from atrium.workflows.blocks.base import BlockContext, BlockError, SecretReader
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import check_template, render

#: Header names as RFC 9110 allows them (a token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,200}$")
#: A plain e-mail address: no display name, no list, no header tricks.
EMAIL_ADDRESS = re.compile(r"^[^@\s,;:<>()\"\[\]\\]{1,64}@[^@\s,;:<>()\"\[\]\\]{1,255}$")
REDACTED = "[redacted]"


def checked_template(source: str | None) -> str | None:
    """``source`` unchanged when it compiles as a template (ValueError otherwise)."""
    if source is not None:
        problem = check_template(source)
        if problem is not None:
            msg = f"invalid template: {problem}"
            raise ValueError(msg)
    return source


def checked_templates(sources: Iterable[str]) -> None:
    """Raise ValueError for the first of ``sources`` that does not compile."""
    for source in sources:
        checked_template(source)


def port_scope(
    ctx: BlockContext, ports: Mapping[str, PortSpec], inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """The template scope, every declared port present (its default when unconnected).

    Templates are strict about undefined names, so an optional port that nothing feeds
    must still exist in the scope for ``{% if context %}`` to work.
    """
    filled = {name: port.default for name, port in ports.items()}
    filled.update(inputs)
    return ctx.template_scope(filled)


def render_optional(source: str | None, scope: Mapping[str, Any]) -> str | None:
    """``render`` for an optional template."""
    return None if source is None else render(source, scope)


def one_line(text: str) -> str:
    """``text`` with line breaks folded into spaces (titles, headings, e-mail subjects)."""
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced (a server may echo what it was sent)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def json_template_sources(value: Any) -> list[str]:
    """Every string inside a JSON value (the templates of a templated JSON body)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in json_template_sources(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in json_template_sources(item)]
    return []


def render_json(value: Any, scope: Mapping[str, Any]) -> Any:
    """A JSON value with each string value rendered as a template (keys stay as written)."""
    if isinstance(value, str):
        return render(value, scope)
    if isinstance(value, list):
        return [render_json(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: render_json(item, scope) for key, item in value.items()}
    return value


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """A streamed response's body, refusing one over ``limit`` bytes without reading it all."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        msg = f"the response is {declared} bytes, over the limit of {limit}"
        raise BlockError(msg)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            msg = f"the response is over the limit of {limit} bytes"
            raise BlockError(msg)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(data: bytes, encoding: str | None) -> str:
    """Response bytes as text: the declared charset, else UTF-8; bad bytes replaced."""
    try:
        return data.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def safe_location(url: httpx.URL) -> str:
    """A URL for messages: scheme, host, port and path; never the query or credentials."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


async def reveal_all(reader: SecretReader, names: dict[str, str]) -> dict[str, str]:
    """Each key's secret value; BlockError naming the secret (never a value) when absent."""
    values = {}
    for key, secret in names.items():
        try:
            values[key] = await reader.reveal(secret)
        except NotFoundError:
            msg = f"no secret named {secret!r}"
            raise BlockError(msg) from None
    return values
