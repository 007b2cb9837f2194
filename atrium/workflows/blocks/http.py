"""The HTTP Request block: call an API, through the SSRF guard, with secrets kept secret.

Every request goes through :func:`atrium.core.netguard.guarded_client` under the
platform's network policy: the scheme is checked on every redirect hop, and the host's
resolved addresses are vetted when the connection is made (private, loopback, link-local
and cloud-metadata addresses are refused unless the policy allows them).

Header values from ``secret_headers`` are read from the secret store at run time. They
never reach the block's outputs or its error messages: any echo of them in a response is
replaced by ``[redacted]``, and they are dropped from a redirect to another origin.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from atrium.core.netguard import BlockedDestinationError, check_url, guarded_client
from atrium.store.secrets import NAME_PATTERN
from atrium.workflows.blocks._shared import (
    HEADER_NAME,
    checked_template,
    checked_templates,
    clip,
    decode_body,
    json_template_sources,
    port_scope,
    read_limited,
    redact,
    render_json,
    reveal_all,
    safe_location,
)
from atrium.workflows.blocks.base import (
    Block,
    BlockConfig,
    BlockContext,
    BlockError,
    BlockResult,
)
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import render

MiB: Final = 1024 * 1024
EXCERPT_CHARS: Final = 300

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
QueryValue = str | int | float | bool


class HttpRequestConfig(BlockConfig):
    """One HTTP request; the URL, header values, query values and body are templates."""

    method: Method = Field("GET", description="The HTTP method.")
    url: str = Field(min_length=1, max_length=8192, description="The URL (a template).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Header name -> value (a template)."
    )
    secret_headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Header name -> the name of a stored secret whose value is the header's "
            "whole value (e.g. 'Bearer sk-...'). Never shown in outputs or errors."
        ),
    )
    query: dict[str, QueryValue] = Field(
        default_factory=dict, description="Query parameters (string values are templates)."
    )
    body: str | dict[str, Any] | list[Any] | None = Field(
        None,
        description=(
            "A template string sent as it renders, or a JSON value sent as JSON with every "
            "string in it rendered as a template ('{{ data | tojson }}' for raw JSON)."
        ),
    )
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Timeout of each phase.")
    max_response_bytes: int = Field(
        5 * MiB, ge=1, le=100 * MiB, description="Larger responses fail the block."
    )
    expect_json: bool = Field(False, description="Fail unless the response body is JSON.")
    fail_on_status: bool = Field(
        True, description="Fail on a status outside 2xx (so retries and error handling apply)."
    )
    follow_redirects: bool = Field(True, description="Follow redirects (each hop is vetted).")
    idempotency_key: bool = Field(
        True,
        description=(
            "Send Idempotency-Key: <run>:<node>, the same on retries and after a crash, so "
            "the receiver can drop a repeated side effect."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        checked_template(value)
        return value

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str]) -> dict[str, str]:
        _check_header_names(value)
        checked_templates(value.values())
        return value

    @field_validator("secret_headers")
    @classmethod
    def _secret_names(cls, value: dict[str, str]) -> dict[str, str]:
        _check_header_names(value)
        for secret in value.values():
            if not NAME_PATTERN.fullmatch(secret):
                msg = f"{secret!r} is not a secret name (1-100 of A-Z a-z 0-9 _ . -)"
                raise ValueError(msg)
        return value

    @field_validator("query")
    @classmethod
    def _query_templates(cls, value: dict[str, QueryValue]) -> dict[str, QueryValue]:
        checked_templates(v for v in value.values() if isinstance(v, str))
        return value

    @field_validator("body")
    @classmethod
    def _body_templates(cls, value: Any) -> Any:
        checked_templates(json_template_sources(value))
        return value

    @model_validator(mode="after")
    def _no_header_twice(self) -> HttpRequestConfig:
        both = {h.lower() for h in self.headers} & {h.lower() for h in self.secret_headers}
        if both:
            msg = f"header {sorted(both)[0]!r} is in both headers and secret_headers"
            raise ValueError(msg)
        return self


def _check_header_names(headers: dict[str, str]) -> None:
    for name in headers:
        if not HEADER_NAME.match(name):
            msg = f"{name!r} is not a valid header name"
            raise ValueError(msg)


@dataclass(slots=True)
class PreparedRequest:
    """A request rendered from the config, with the secret values it carries."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    content: bytes | None = None
    json_body: Any = None
    secrets: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        """``METHOD scheme://host/path`` for messages (no query string: it may carry data)."""
        return f"{self.method} {safe_location(self.url)}"


def _parse_url(text: str) -> httpx.URL:
    try:
        return httpx.URL(text.strip())
    except httpx.InvalidURL as exc:
        msg = f"invalid URL: {exc}"
        raise BlockError(msg) from None


async def prepare_request(
    ctx: BlockContext, config: HttpRequestConfig, scope: dict[str, Any]
) -> PreparedRequest:
    """Render the URL, headers, query and body; reveal the secret headers."""
    url = _parse_url(render(config.url, scope))
    try:
        check_url(url, ctx.services.network_policy)
    except BlockedDestinationError as exc:
        raise BlockError(exc.message) from None
    headers = {"Idempotency-Key": ctx.idempotency_key} if config.idempotency_key else {}
    headers.update({name: render(value, scope) for name, value in config.headers.items()})
    secret_values = await reveal_all(ctx.services.secrets, config.secret_headers)
    params = {k: render(v, scope) if isinstance(v, str) else v for k, v in config.query.items()}
    if params:  # merged: httpx's params= would replace a query written in the URL
        url = url.copy_merge_params(params)
    request = PreparedRequest(
        config.method, url, {**headers, **secret_values}, secrets=[*secret_values.values()]
    )
    if isinstance(config.body, str):
        request.content = render(config.body, scope).encode()
    elif config.body is not None:
        request.json_body = render_json(config.body, scope)
    return request


def _drop_secrets_off_origin(
    origin: httpx.URL, names: list[str]
) -> Callable[[httpx.Request], Awaitable[None]]:
    """A request hook removing secret headers from any hop to another origin."""

    async def hook(request: httpx.Request) -> None:
        url = request.url
        if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
            for name in names:
                request.headers.pop(name, None)

    return hook


@dataclass(frozen=True, slots=True)
class RawResponse:
    """What came back: status, headers and the (bounded) body."""

    status: int
    headers: httpx.Headers
    body: bytes
    encoding: str | None


async def send(
    ctx: BlockContext, config: HttpRequestConfig, request: PreparedRequest
) -> RawResponse:
    """Send through the guarded client; every failure is a BlockError without secrets."""
    client = guarded_client(
        ctx.services.network_policy,
        timeout=config.timeout_seconds,
        follow_redirects=config.follow_redirects,
    )
    client.event_hooks = {
        "request": [_drop_secrets_off_origin(request.url, list(config.secret_headers))],
        "response": [],
    }
    try:
        async with (
            client,
            client.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.content,
                json=request.json_body,
            ) as response,
        ):
            body = await read_limited(response, config.max_response_bytes)
            return RawResponse(response.status_code, response.headers, body, response.encoding)
    except BlockedDestinationError as exc:
        raise BlockError(exc.message) from None
    except httpx.TimeoutException:
        msg = f"{request.where}: no answer within {config.timeout_seconds:g} s"
        raise BlockError(msg) from None
    except httpx.HTTPError as exc:
        detail = redact(str(exc) or type(exc).__name__, request.secrets)
        raise BlockError(f"{request.where}: {detail}") from None


def response_outputs(
    config: HttpRequestConfig, request: PreparedRequest, raw: RawResponse
) -> dict[str, Any]:
    """The block's outputs; BlockError on a failing status or a body that must be JSON."""
    text = redact(decode_body(raw.body, raw.encoding), request.secrets)
    if config.fail_on_status and not 200 <= raw.status < 300:
        msg = f"{request.where} answered {raw.status}: {clip(text.strip(), EXCERPT_CHARS)}"
        raise BlockError(msg)
    headers: dict[str, str] = {}
    for name, raw_value in raw.headers.multi_items():
        value = redact(raw_value, request.secrets)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return {
        "status": raw.status,
        "headers": headers,
        "body": text,
        "json": _json_value(config, raw.headers.get("content-type", ""), text, request.where),
    }


def _json_value(config: HttpRequestConfig, content_type: str, text: str, where: str) -> Any:
    if not (config.expect_json or "json" in content_type.lower()):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if config.expect_json:
            msg = f"{where}: the response is not JSON ({exc.msg} at position {exc.pos})"
            raise BlockError(msg) from None
        return None


class HttpRequestBlock(Block):
    """Call any HTTP API; the platform's network policy decides where requests may go."""

    type = "http_request"
    title = "HTTP Request"
    description = "Call an HTTP API; secrets as headers; private networks refused by default."
    category = "integration"
    Config = HttpRequestConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"data": PortSpec(type="any", required=False, description="For the templates.")}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "status": PortSpec(type="integer"),
            "headers": PortSpec(type="object", description="Lower-case names."),
            "body": PortSpec(type="string"),
            "json": PortSpec(type="any", required=False, description="The body, when JSON."),
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, HttpRequestConfig)
        request = await prepare_request(ctx, config, port_scope(ctx, self.inputs(config), inputs))
        raw = await send(ctx, config, request)
        return BlockResult(response_outputs(config, request, raw))


__all__ = ["HttpRequestBlock", "HttpRequestConfig", "PreparedRequest"]
