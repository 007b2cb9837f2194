"""The Agent block's tools: knowledge bases, HTTP APIs, other blocks and MCP servers.

Each tool spec is a typed config (validated when the workflow is saved) and
:class:`ToolRunner` runs one call of it. A tool never fails the agent: a refused
destination, an error status, a failing block or an unreachable server becomes the
observation the model reads next (``error: ...``), so it can try something else.

HTTP tools go through the HTTP Request block's own request path (the SSRF guard,
secret headers redacted from everything the model sees, a bounded body). MCP tools use
the official ``mcp`` SDK over Streamable HTTP; the SDK speaks ``httpx2``, so it gets a
client whose transport checks every request URL with :func:`check_url` and whose
network backend connects only to addresses that :func:`resolve_and_vet` passed (the
same two checks as :func:`atrium.core.netguard.guarded_client`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Final, Literal

import anyio
import httpcore2
import httpx
import httpx2
import mcp_types
from mcp import Client
from mcp.client.streamable_http import StreamableHTTPError, streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from atrium.core.errors import AtriumError
from atrium.core.netguard import (
    BlockedDestinationError,
    NetworkPolicy,
    check_url,
    connect_first,
    resolve_and_vet,
)
from atrium.store.secrets import NAME_PATTERN
from atrium.workflows.blocks._shared import (
    HEADER_NAME,
    checked_template,
    checked_templates,
    clip,
    json_template_sources,
    redact,
    reveal_all,
)
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError
from atrium.workflows.blocks.http import (
    HttpRequestConfig,
    prepare_request,
    response_outputs,
    send,
)
from atrium.workflows.blocks.llm import schema_errors, valid_schema
from atrium.workflows.dsl import IDENT

JSON = dict[str, Any]
BlockLookup = Callable[[str], Block | None]

FINAL_ANSWER: Final = "final_answer"
MiB: Final = 1024 * 1024
#: The context key under which ``AgentBlock.parse_config`` passes its block lookup.
LOOKUP_CONTEXT: Final = "block_lookup"
ANY_OBJECT: Final[JSON] = {"type": "object"}
QUERY_SCHEMA: Final[JSON] = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1}},
    "required": ["query"],
}
_MAX_MCP_ERRORS: Final = 3


# -- tool specs -----------------------------------------------------------------------


class ToolSpec(BlockConfig):
    """What every tool has: the name the model calls it by, and what it is for."""

    name: str = Field(
        pattern=IDENT, description="The name the model calls the tool by (an identifier)."
    )
    description: str = Field(
        min_length=1,
        max_length=2000,
        description="What the tool does and when to use it; the model reads this.",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == FINAL_ANSWER:
            msg = f"{FINAL_ANSWER!r} is the agent's own action, not a tool name"
            raise ValueError(msg)
        return value

    def arguments_schema(self) -> JSON:
        """The JSON Schema of the tool's arguments, shown to the model and enforced."""
        return ANY_OBJECT


def _schema_field() -> Any:
    return Field(
        None,
        description=(
            "A JSON Schema for the tool's arguments (an object), shown to the model; "
            "calls whose arguments do not validate are sent back to it."
        ),
    )


class KnowledgeBaseTool(ToolSpec):
    """Search a knowledge base; the passages come back numbered, for citations."""

    kind: Literal["knowledge_base"] = Field(description="A knowledge-base search.")
    knowledge_base: str = Field(
        min_length=1, max_length=200, description="The knowledge base's name."
    )
    top_k: int = Field(5, ge=1, le=20, description="Passages per search.")
    filters: dict[str, Any] | None = Field(
        None, description="Metadata filters, passed to the knowledge base as they are."
    )

    def arguments_schema(self) -> JSON:
        """``{"query": string}``."""
        return QUERY_SCHEMA


class HttpTool(ToolSpec):
    """Call an HTTP API: the URL, headers and body are templates over ``args``."""

    kind: Literal["http"] = Field(description="An HTTP request.")
    method: Literal["GET", "POST"] = Field("GET", description="GET or POST.")
    url: str = Field(
        min_length=1,
        max_length=8192,
        description=(
            "The URL, a template over the arguments: "
            "https://api.example.com/q?s={{ args.q | urlencode }}"
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Header name -> value (a template)."
    )
    secret_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Header name -> the name of a stored secret (never shown to the model).",
    )
    body: str | dict[str, Any] | list[Any] | None = Field(
        None,
        description=(
            "For POST: a template string, or JSON whose strings are templates; "
            "unset, the arguments are sent as the JSON body."
        ),
    )
    parameters: JSON | None = _schema_field()
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="Timeout of each phase.")
    max_response_bytes: int = Field(
        MiB, ge=1, le=20 * MiB, description="Larger responses are an error observation."
    )

    @field_validator("url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        checked_template(value)
        return value

    @field_validator("body")
    @classmethod
    def _body_templates(cls, value: Any) -> Any:
        checked_templates(json_template_sources(value))
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: JSON | None) -> JSON | None:
        return valid_schema(value)

    @model_validator(mode="after")
    def _as_request(self) -> HttpTool:
        # The HTTP Request block's own checks: header names and templates, secret names.
        try:
            self.request_config("")
        except ValidationError as exc:
            raise ValueError(validation_summary(exc)) from None
        return self

    def arguments_schema(self) -> JSON:
        """The configured ``parameters``, or any object."""
        return self.parameters or ANY_OBJECT

    def request_config(self, idempotency_key: str) -> HttpRequestConfig:
        """The equivalent HTTP Request block config (errors reach the model, not the run)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return HttpRequestConfig(
            method=self.method,
            url=self.url,
            headers={**headers, **self.headers},
            secret_headers=self.secret_headers,
            body=self.body,
            timeout_seconds=self.timeout_seconds,
            max_response_bytes=self.max_response_bytes,
            fail_on_status=False,
            idempotency_key=False,
        )


class BlockTarget(BlockConfig):
    """A registered block type and its config."""

    type: str = Field(min_length=1, max_length=100, description="A block type, e.g. transform.")
    config: dict[str, Any] = Field(default_factory=dict, description="That block's config.")


class BlockTool(ToolSpec):
    """Run another block inline; the arguments are its ``data`` input (or its inputs)."""

    kind: Literal["block"] = Field(description="Another block, run inline.")
    block: BlockTarget = Field(description="The block to run.")
    parameters: JSON | None = _schema_field()

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: JSON | None) -> JSON | None:
        return valid_schema(value)

    @model_validator(mode="after")
    def _known_block(self, info: ValidationInfo) -> BlockTool:
        lookup = (info.context or {}).get(LOOKUP_CONTEXT)
        if lookup is not None:
            tool_block(lookup, self)
        return self

    def arguments_schema(self) -> JSON:
        """The configured ``parameters``, or any object."""
        return self.parameters or ANY_OBJECT


class McpTool(ToolSpec):
    """Call one tool of an MCP server over Streamable HTTP."""

    kind: Literal["mcp"] = Field(description="A tool of an MCP server.")
    url: str = Field(
        min_length=1, max_length=2048, description="The server's Streamable HTTP endpoint."
    )
    tool: str = Field(min_length=1, max_length=128, description="The MCP tool's name.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    secret_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Header name -> the name of a stored secret (e.g. Authorization).",
    )
    parameters: JSON | None = Field(
        None,
        description=(
            "A JSON Schema for the arguments; unset, the server's own input schema is "
            "listed when the agent starts."
        ),
    )
    timeout_seconds: float = Field(60.0, gt=0, le=600, description="Limit for one call.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            msg = f"invalid URL: {exc}"
            raise ValueError(msg) from None
        if url.scheme not in {"http", "https"} or not url.host:
            msg = "the MCP endpoint must be an http or https URL"
            raise ValueError(msg)
        return value

    @field_validator("headers", "secret_headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = next((name for name in value if not HEADER_NAME.match(name)), None)
        if bad is not None:
            msg = f"{bad!r} is not a valid header name"
            raise ValueError(msg)
        return value

    @field_validator("secret_headers")
    @classmethod
    def _secret_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = next((s for s in value.values() if not NAME_PATTERN.fullmatch(s)), None)
        if bad is not None:
            msg = f"{bad!r} is not a secret name (1-100 of A-Z a-z 0-9 _ . -)"
            raise ValueError(msg)
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: JSON | None) -> JSON | None:
        return valid_schema(value)

    def arguments_schema(self) -> JSON:
        """The configured ``parameters`` (or the listed schema), else any object."""
        return self.parameters or ANY_OBJECT


AgentTool = Annotated[
    KnowledgeBaseTool | HttpTool | BlockTool | McpTool, Field(discriminator="kind")
]


def tool_block(lookup: BlockLookup, tool: BlockTool) -> tuple[Block, BlockConfig]:
    """The block a block tool runs and its parsed config; ValueError when it cannot run."""
    block = lookup(tool.block.type)
    if block is None:
        msg = f"tool {tool.name!r}: there is no block type {tool.block.type!r}"
        raise ValueError(msg)
    # Flow blocks steer the graph and engine blocks need the engine: neither is a tool.
    if block.kind == "engine" or block.category == "flow":
        msg = f"tool {tool.name!r}: a {tool.block.type!r} block cannot run as a tool"
        raise ValueError(msg)
    try:
        return block, block.parse_config(tool.block.config)
    except ValidationError as exc:
        msg = f"tool {tool.name!r}: invalid {tool.block.type} config: {validation_summary(exc)}"
        raise ValueError(msg) from None


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error as one line: ``where: what`` for each problem."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


# -- running a call -------------------------------------------------------------------


class ToolRunner:
    """Runs the model's tool calls for one agent execution; keeps the citations seen."""

    def __init__(
        self,
        ctx: BlockContext,
        scope: Mapping[str, Any],
        lookup: BlockLookup,
        max_chars: int,
    ) -> None:
        self._ctx = ctx
        self._scope = dict(scope)
        self._lookup = lookup
        self._max_chars = max_chars
        self._numbers: dict[str, int] = {}
        self._calls = 0
        self.citations: list[JSON] = []
        self.tokens = 0
        self.cost_usd = 0.0
        self.listed: dict[str, JSON] = {}

    def schema(self, tool: ToolSpec) -> JSON:
        """The arguments schema the model sees for ``tool``."""
        return self.listed.get(tool.name) or tool.arguments_schema()

    async def call(self, tool: ToolSpec, args: JSON) -> str:
        """One call's observation, at most ``max_chars`` long; errors are observations."""
        self._calls += 1
        problems = schema_errors(args, self.schema(tool))
        if problems:
            listed = "; ".join(problems)
            return clip(f"error: invalid arguments for {tool.name}: {listed}", self._max_chars)
        try:
            text = await self._dispatch(tool, args)
        except BlockError as exc:
            text = f"error: {exc}"
        except AtriumError as exc:  # refused destination, unknown knowledge base, ...
            text = f"error: {exc.message}"
        return clip(text, self._max_chars)

    async def _dispatch(self, tool: ToolSpec, args: JSON) -> str:
        if isinstance(tool, KnowledgeBaseTool):
            return await self._search(tool, args)
        if isinstance(tool, HttpTool):
            return await self._http(tool, args)
        if isinstance(tool, BlockTool):
            return await self._block(tool, args)
        assert isinstance(tool, McpTool)
        return await call_mcp(self._ctx, tool, args)

    async def _search(self, tool: KnowledgeBaseTool, args: JSON) -> str:
        query = str(args.get("query", "")).strip()
        if not query:
            return "error: the query is empty"
        found = await self._ctx.services.knowledge.search(
            self._ctx.key_id, tool.knowledge_base, query, top_k=tool.top_k, filters=tool.filters
        )
        if not found:
            return f"No passages in {tool.knowledge_base} match {query!r}."
        return "\n\n".join(self._passage(tool.knowledge_base, citation) for citation in found)

    def _passage(self, knowledge_base: str, citation: JSON) -> str:
        """``[n] text``, n the same for a chunk seen twice; the citation kept once."""
        key = str(citation.get("chunk_id") or (citation.get("document_id"), citation.get("text")))
        if key not in self._numbers:
            self._numbers[key] = len(self._numbers) + 1
            numbered = {**citation, "number": self._numbers[key], "knowledge_base": knowledge_base}
            self.citations.append(numbered)
        text = str(citation.get("text") or citation.get("snippet") or "").strip()
        title = str(citation.get("title") or "").strip()
        # Indexed chunks start with their title line already.
        heading = f" ({title})" if title and not text.startswith(f"{title}\n") else ""
        return f"[{self._numbers[key]}]{heading} {text}"

    async def _http(self, tool: HttpTool, args: JSON) -> str:
        # One key per call, the same when a retry makes the same calls in the same order.
        config = tool.request_config(f"{self._ctx.idempotency_key}:{self._calls}")
        request = await prepare_request(self._ctx, config, {**self._scope, "args": args})
        if tool.method == "POST" and tool.body is None:
            request.json_body = args
        raw = await send(self._ctx, config, request)
        outputs = response_outputs(config, request, raw)
        body = outputs["json"] if outputs["json"] is not None else outputs["body"]
        return f"HTTP {outputs['status']}\n{as_text(body)}"

    async def _block(self, tool: BlockTool, args: JSON) -> str:
        try:
            block, config = tool_block(self._lookup, tool)
        except ValueError as exc:
            raise BlockError(str(exc)) from None
        ports = block.inputs(config)
        inputs = {"data": args} if "data" in ports or not ports else dict(args)
        unknown = sorted(set(inputs) - set(ports)) if ports else []
        if unknown:
            return f"error: {tool.name} takes {', '.join(sorted(ports))}, not {', '.join(unknown)}"
        # Its own node id: an HTTP block's Idempotency-Key differs per call.
        inner = dataclasses.replace(self._ctx, node_id=f"{self._ctx.node_id}:{self._calls}")
        result = await block.run(inner, config, inputs)
        self.tokens += result.tokens
        self.cost_usd += result.cost_usd
        return as_text(result.outputs)

    async def list_mcp_schemas(self, tools: Iterable[ToolSpec]) -> None:
        """Fill in the input schemas of MCP tools that have no ``parameters`` (best effort)."""
        for tool in tools:
            if isinstance(tool, McpTool) and tool.parameters is None:
                schema = await list_mcp_schema(self._ctx, tool)
                if schema is not None:
                    self.listed[tool.name] = schema


def as_text(value: Any) -> str:
    """A value as the model reads it: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# -- MCP over a guarded httpx2 client -------------------------------------------------


class _VettingBackend(httpcore2.AsyncNetworkBackend):
    """Resolves and vets the host (netguard's rules), then connects to those addresses."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            addresses = await resolve_and_vet(host, port, self._policy)
        except OSError as exc:
            msg = f"cannot resolve {host}: {exc}"
            raise httpcore2.ConnectError(msg) from None
        return await connect_first(
            addresses,
            lambda address: self._inner.connect_tcp(
                address, port, timeout, local_address, socket_options
            ),
            (httpcore2.ConnectError, httpcore2.ConnectTimeout),
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise BlockedDestinationError(path, "unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport with every request URL checked and every connection vetted."""

    def __init__(self, policy: NetworkPolicy) -> None:
        super().__init__(trust_env=False)
        self._policy = policy
        # As in netguard: the pool is rebuilt with the vetting network backend.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            network_backend=_VettingBackend(policy),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Check the URL (every request the SDK makes), then send."""
        check_url(str(request.url), self._policy)
        return await super().handle_async_request(request)


def guarded_mcp_client(
    policy: NetworkPolicy, headers: Mapping[str, str], timeout: float
) -> httpx2.AsyncClient:
    """An ``httpx2`` client for the MCP SDK that cannot reach what the policy forbids."""
    return httpx2.AsyncClient(
        transport=_GuardedTransport(policy),
        headers=dict(headers),
        timeout=httpx2.Timeout(timeout),
        trust_env=False,
    )


_MCP_FAILURES: Final = (
    AtriumError,
    BlockError,
    MCPError,
    StreamableHTTPError,
    httpx2.HTTPError,
    OSError,
    TimeoutError,
)


async def _mcp_headers(ctx: BlockContext, tool: McpTool) -> tuple[dict[str, str], list[str]]:
    """Check the endpoint (a readable refusal before the SDK connects); reveal the secrets."""
    url = httpx.URL(tool.url)
    policy = ctx.services.network_policy
    check_url(url, policy)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        await resolve_and_vet(url.host, port, policy)
    except OSError as exc:
        msg = f"cannot resolve {url.host}: {exc}"
        raise BlockError(msg) from None
    secrets = await reveal_all(ctx.services.secrets, tool.secret_headers)
    return {**tool.headers, **secrets}, list(secrets.values())


async def call_mcp(ctx: BlockContext, tool: McpTool, args: JSON) -> str:
    """Call the MCP tool; its text (or structured) result, or ``error: ...``."""
    headers, secrets = await _mcp_headers(ctx, tool)
    policy = ctx.services.network_policy
    try:
        with anyio.fail_after(tool.timeout_seconds):
            async with (
                guarded_mcp_client(policy, headers, tool.timeout_seconds) as http,
                Client(streamable_http_client(tool.url, http_client=http)) as client,
            ):
                result = await client.call_tool(tool.tool, args)
    except (ExceptionGroup, *_MCP_FAILURES) as exc:
        return redact(f"error: {mcp_failure(exc, tool)}", secrets)
    text = redact(mcp_result_text(result), secrets)
    return f"error: {text}" if result.is_error else text


async def list_mcp_schema(ctx: BlockContext, tool: McpTool) -> JSON | None:
    """The MCP tool's input schema as the server lists it; None when it cannot be had."""
    try:
        headers, _secrets = await _mcp_headers(ctx, tool)
        with anyio.fail_after(tool.timeout_seconds):
            async with (
                guarded_mcp_client(
                    ctx.services.network_policy, headers, tool.timeout_seconds
                ) as http,
                Client(streamable_http_client(tool.url, http_client=http)) as client,
            ):
                listing = await client.list_tools()
    except (ExceptionGroup, *_MCP_FAILURES) as exc:
        mcp_failure(exc, tool)  # raises again anything that is not a failed exchange
        return None  # the call itself will tell the model what is wrong
    listed = next((t for t in listing.tools if t.name == tool.tool), None)
    return dict(listed.input_schema) if listed is not None else None


def mcp_failure(exc: BaseException, tool: McpTool) -> str:
    """A message for a failed MCP exchange; anything unexpected is raised again."""
    leaves = list(_leaves(exc))
    unexpected = next((leaf for leaf in leaves if not isinstance(leaf, _MCP_FAILURES)), None)
    if unexpected is not None:
        raise unexpected
    where = f"MCP server {httpx.URL(tool.url).host}"
    messages = [_leaf_message(leaf, tool) for leaf in leaves[:_MAX_MCP_ERRORS]]
    return f"{where}: {'; '.join(messages)}"


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _leaf_message(exc: BaseException, tool: McpTool) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {tool.timeout_seconds:g} s"
    if isinstance(exc, AtriumError):
        return exc.message
    return str(exc) or type(exc).__name__


def mcp_result_text(result: mcp_types.CallToolResult) -> str:
    """The result's text parts; structured content as JSON when there is no text."""
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, mcp_types.TextContent):
            parts.append(item.text)
        elif isinstance(item, mcp_types.EmbeddedResource) and isinstance(
            item.resource, mcp_types.TextResourceContents
        ):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{item.type} content]")
    if not parts and result.structured_content is not None:
        return as_text(result.structured_content)
    return "\n".join(parts)


__all__ = [
    "ANY_OBJECT",
    "FINAL_ANSWER",
    "LOOKUP_CONTEXT",
    "QUERY_SCHEMA",
    "AgentTool",
    "BlockLookup",
    "BlockTarget",
    "BlockTool",
    "HttpTool",
    "KnowledgeBaseTool",
    "McpTool",
    "ToolRunner",
    "ToolSpec",
    "as_text",
    "call_mcp",
    "guarded_mcp_client",
    "tool_block",
]
