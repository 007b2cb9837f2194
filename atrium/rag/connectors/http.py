"""Items of a JSON API as documents, page by page, through the SSRF guard.

Every request goes through :func:`atrium.core.netguard.guarded_client`. The auth header
(from a secret) is only ever sent to the configured URL's origin: a redirect or a next
link to another origin goes without it. Errors name the method, the URL (credentials in
it masked) and the status, never the auth header.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

import httpx
import orjson
from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as parse_jsonpath
from pydantic import Field, JsonValue, field_validator, model_validator

from atrium.core.netguard import BlockedDestinationError, guarded_client
from atrium.rag.connectors._patterns import Template, validate_template
from atrium.rag.connectors.base import (
    ConnectorContext,
    ConnectorError,
    DocumentFailure,
    Documents,
    SourceSpecBase,
    as_text,
    format_size,
    make_document,
    mask_url,
    parse_timestamp,
    read_secret,
    safe_filename,
    scrub,
    to_scalar,
)
from atrium.rag.types import Scalar, SourceDocument

#: Largest response page read; a bigger one fails the sync rather than exhaust memory.
MAX_PAGE_BYTES: Final = 64 * 1024 * 1024
_EXCERPT_BYTES: Final = 300
_FORBIDDEN_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"}
)


@lru_cache(maxsize=512)
def compile_jsonpath(expression: str) -> JSONPath:
    """A parsed JSONPath (extended syntax, filters included); ``ValueError`` if invalid."""
    try:
        return parse_jsonpath(expression)
    except (JsonPathLexerError, JsonPathParserError) as exc:
        msg = f"{expression!r} is not a valid JSONPath: {exc}"
        raise ValueError(msg) from None


def _jsonpath(expression: str | None) -> str | None:
    if expression is not None:
        compile_jsonpath(expression)
    return expression


JsonPathText = Annotated[str, Field(min_length=1)]


class NoPagination(SourceSpecBase):
    """Every item is in the one response."""

    type: Literal["none"] = Field("none", description="No pagination.")


class PageNumberPagination(SourceSpecBase):
    """Pages numbered ``start``, ``start + 1``, ...; stops at an empty (or short) page."""

    type: Literal["page-number"] = Field(description="Numbered pages.")
    param: str = Field("page", min_length=1, description="Parameter carrying the page number.")
    start: int = Field(1, ge=0, description="Number of the first page.")
    size_param: str | None = Field(None, description="Parameter carrying the page size.")
    size: int | None = Field(
        None, ge=1, description="Page size to ask for; a shorter page is the last one."
    )


class CursorPagination(SourceSpecBase):
    """Each response names a cursor for the next page; stops when it has none."""

    type: Literal["cursor"] = Field(description="Cursor pagination.")
    cursor: JsonPathText = Field(description="JSONPath to the next cursor in a response.")
    param: str = Field("cursor", min_length=1, description="Parameter carrying the cursor.")

    _cursor_parses = field_validator("cursor")(_jsonpath)


class NextLinkPagination(SourceSpecBase):
    """Each response links to the next page; stops when it has no link."""

    type: Literal["next-link"] = Field(description="Next-link pagination.")
    next: JsonPathText = Field(description="JSONPath to the next page's URL in a response.")

    _next_parses = field_validator("next")(_jsonpath)


Pagination = Annotated[
    NoPagination | PageNumberPagination | CursorPagination | NextLinkPagination,
    Field(discriminator="type"),
]


class HttpSource(SourceSpecBase):
    """Items of a JSON API, one document per item."""

    kind: Literal["http"] = Field("http", description="Source kind: a JSON API.")
    url: str = Field(description="The API URL (http or https) of the first page.")
    method: Literal["GET", "POST"] = Field("GET", description="HTTP method.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (no secrets: use auth_secret)."
    )
    body: dict[str, JsonValue] | None = Field(
        None, description="JSON body of a POST; pagination parameters are added to it."
    )
    auth_secret: str | None = Field(None, description="Name of the secret holding the API key.")
    auth_header: str = Field("Authorization", description="Header that carries the key.")
    auth_scheme: str = Field(
        "Bearer", description="Written before the key in the header; empty for the bare key."
    )
    items: JsonPathText = Field("$", description="JSONPath to the list of items in a response.")
    id: JsonPathText = Field(description="JSONPath, within an item, to its stable id.")
    text: str | None = Field(None, description="JSONPath, within an item, to its text.")
    template: str | None = Field(
        None,
        description=(
            "The text built from the item's top-level fields and metadata names, e.g. "
            "'{title}\\n\\n{body}' (instead of text)."
        ),
    )
    title: str | None = Field(None, description="JSONPath, within an item, to its title.")
    updated: str | None = Field(
        None, description="JSONPath, within an item, to when it last changed."
    )
    link: str | None = Field(None, description="JSONPath, within an item, to its web page.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Metadata name -> JSONPath within an item."
    )
    media_type: str = Field(
        "text/plain", description="Type of the text: text/plain, text/markdown or text/html."
    )
    pagination: Pagination = Field(default_factory=NoPagination, description="How to page.")
    max_pages: int = Field(
        100, ge=1, le=100_000, description="Most pages read; more remaining fails the sync."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Timeout of each request.")

    _paths_parse = field_validator("items", "id", "text", "title", "updated", "link")(_jsonpath)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the url must be an http or https URL with a host")
        return url

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        forbidden = sorted(h for h in headers if h.lower() in _FORBIDDEN_HEADERS)
        if forbidden:
            raise ValueError(f"these headers cannot be set: {forbidden}")
        return headers

    @field_validator("metadata")
    @classmethod
    def _metadata_paths_parse(cls, metadata: dict[str, str]) -> dict[str, str]:
        for expression in metadata.values():
            compile_jsonpath(expression)
        return metadata

    @model_validator(mode="after")
    def _text_or_template(self) -> HttpSource:
        if (self.text is None) == (self.template is None):
            raise ValueError("set exactly one of text and template")
        if self.template is not None:
            validate_template(self.template)
        return self

    def build(self, context: ConnectorContext) -> HttpConnector:
        """A connector over this API (the secret is read on each sync)."""
        return HttpConnector(self, context)


@dataclass(slots=True)
class _Page:
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    number: int = 1


class HttpConnector:
    """Reads the pages of an :class:`HttpSource` and yields their items as documents."""

    def __init__(
        self, spec: HttpSource, context: ConnectorContext, *, max_page_bytes: int = MAX_PAGE_BYTES
    ) -> None:
        self._spec = spec
        self._context = context
        self._max_page_bytes = max_page_bytes
        self._template = Template.parse(spec.template) if spec.template else None
        origin = httpx.URL(spec.url)
        self._origin = (origin.scheme, origin.host, origin.port)
        extension = mimetypes.guess_extension(spec.media_type.split(";")[0].strip())
        self._extension = extension or ".txt"

    async def documents(self) -> Documents:
        """Every item of every page, in order."""
        spec = self._spec
        secret = None
        if spec.auth_secret is not None:
            secret = await read_secret(self._context.secrets, spec.auth_secret)
        headers = dict(spec.headers)
        if secret is not None:
            headers[spec.auth_header] = f"{spec.auth_scheme} {secret}".strip()
        client = guarded_client(self._context.policy, timeout=spec.timeout_seconds, headers=headers)
        client.event_hooks = {"request": [self._keep_auth_at_home]}
        seen: set[str] = set()
        page: _Page | None = self._first_page()
        async with client:
            while page is not None:
                if page.number > spec.max_pages:
                    shown = mask_url(spec.url)
                    msg = f"more pages remain after max_pages ({spec.max_pages}) at {shown}"
                    raise ConnectorError(msg)
                payload = await self._fetch(client, page, secret)
                items = self._items(payload, page)
                for index, item in enumerate(items):
                    yield self._document(item, f"page {page.number} item {index + 1}", seen)
                page = self._next_page(page, payload, len(items))

    def _first_page(self) -> _Page:
        pagination = self._spec.pagination
        page = _Page(self._spec.url)
        if isinstance(pagination, PageNumberPagination):
            page.params[pagination.param] = pagination.start
            if pagination.size_param and pagination.size:
                page.params[pagination.size_param] = pagination.size
        return page

    def _next_page(self, page: _Page, payload: object, count: int) -> _Page | None:
        pagination = self._spec.pagination
        if isinstance(pagination, PageNumberPagination):
            return _next_numbered(pagination, page, count)
        if isinstance(pagination, CursorPagination):
            return _next_cursor(pagination, page, payload)
        if isinstance(pagination, NextLinkPagination):
            return _next_link(pagination, page, payload)
        return None

    async def _fetch(self, client: httpx.AsyncClient, page: _Page, secret: str | None) -> object:
        spec = self._spec
        query = page.params if spec.method == "GET" else {}
        body = (spec.body or {}) | page.params if spec.method == "POST" else None
        shown = f"{spec.method} {mask_url(str(httpx.URL(page.url).copy_merge_params(query)))}"
        try:
            async with client.stream(spec.method, page.url, params=query, json=body) as response:
                shown = f"{spec.method} {mask_url(str(response.url))}"
                if not response.is_success:
                    excerpt = await _excerpt(response)
                    status = f"{response.status_code} {response.reason_phrase}".strip()
                    raise ConnectorError(scrub(f"{shown} answered {status}{excerpt}", [secret]))
                data = await self._read(response, shown)
        except httpx.TimeoutException:
            raise ConnectorError(f"{shown} timed out after {spec.timeout_seconds:g} s") from None
        except BlockedDestinationError as exc:
            raise ConnectorError(f"{shown}: {exc.message}") from None
        except httpx.HTTPError as exc:
            raise ConnectorError(scrub(f"{shown} failed: {exc}", [secret])) from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ConnectorError(f"{shown} did not answer with JSON") from None

    async def _read(self, response: httpx.Response, shown: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_page_bytes:
                limit = format_size(self._max_page_bytes)
                raise ConnectorError(f"{shown} answered more than {limit} in one page")
            chunks.append(chunk)
        return b"".join(chunks)

    def _items(self, payload: object, page: _Page) -> list[object]:
        matches = [m.value for m in compile_jsonpath(self._spec.items).find(payload)]
        if not matches:
            msg = f"no items at {self._spec.items} in the answer of {mask_url(page.url)}"
            raise ConnectorError(msg)
        if len(matches) == 1 and isinstance(matches[0], list):
            return list(matches[0])
        return matches

    def _document(
        self, item: object, position: str, seen: set[str]
    ) -> SourceDocument | DocumentFailure:
        spec = self._spec
        raw_id = _first(spec.id, item)
        if raw_id is None or raw_id == "" or isinstance(raw_id, dict | list):
            return DocumentFailure(position, f"has no id at {spec.id}")
        key = as_text(raw_id)
        if key in seen:
            return DocumentFailure(key, "another item has the same id")
        seen.add(key)
        metadata: dict[str, Scalar] = {}
        for name, expression in spec.metadata.items():
            value = to_scalar(_first(expression, item))
            if value is not None:
                metadata[name] = value
        text = self._text(item, metadata)
        if not text.strip():
            where = f"at {spec.text}" if spec.text else "from the template"
            return DocumentFailure(key, f"has no text {where}")
        title, link = _first(spec.title, item), _first(spec.link, item)
        return make_document(
            key,
            text.encode(),
            safe_filename(key, self._extension),
            media_type=spec.media_type,
            title=as_text(title) if title is not None else None,
            uri=link if isinstance(link, str) and link else None,
            updated_at=parse_timestamp(_first(spec.updated, item)),
            metadata=metadata,
        )

    def _text(self, item: object, metadata: dict[str, Scalar]) -> str:
        if self._template is None:
            return as_text(_first(self._spec.text, item))
        fields: dict[str, object] = dict(item) if isinstance(item, dict) else {}
        return self._template.render(fields | metadata)

    async def _keep_auth_at_home(self, request: httpx.Request) -> None:
        # httpx drops Authorization on a redirect to another origin, not a custom header.
        if (request.url.scheme, request.url.host, request.url.port) != self._origin:
            request.headers.pop(self._spec.auth_header, None)


def _next_numbered(pagination: PageNumberPagination, page: _Page, count: int) -> _Page | None:
    if count == 0 or (pagination.size is not None and count < pagination.size):
        return None
    params = page.params | {pagination.param: page.params[pagination.param] + 1}
    return _Page(page.url, params, page.number + 1)


def _next_cursor(pagination: CursorPagination, page: _Page, payload: object) -> _Page | None:
    cursor = _first(pagination.cursor, payload)
    if cursor is None or cursor == "":
        return None
    if cursor == page.params.get(pagination.param):
        raise ConnectorError(f"{mask_url(page.url)} returned the same cursor twice")
    return _Page(page.url, page.params | {pagination.param: cursor}, page.number + 1)


def _next_link(pagination: NextLinkPagination, page: _Page, payload: object) -> _Page | None:
    link = _first(pagination.next, payload)
    if not isinstance(link, str) or not link:
        return None
    following = str(httpx.URL(page.url).join(link))
    if following == page.url:
        raise ConnectorError(f"{mask_url(page.url)} links to itself as the next page")
    return _Page(following, {}, page.number + 1)


def _first(expression: str | None, data: object) -> Any:
    """The first value ``expression`` finds in ``data`` (None when it finds nothing)."""
    if expression is None:
        return None
    matches = compile_jsonpath(expression).find(data)
    return matches[0].value if matches else None


async def _excerpt(response: httpx.Response) -> str:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _EXCERPT_BYTES:
            break
    text = " ".join(body[:_EXCERPT_BYTES].decode("utf-8", errors="replace").split())
    return f": {text}" if text else ""
