"""HTTP sources against a real JSON API on 127.0.0.1: every pagination style, auth, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from atrium.core.netguard import NetworkPolicy
from atrium.rag.connectors import (
    ConnectorError,
    CursorPagination,
    HttpSource,
    NextLinkPagination,
    PageNumberPagination,
)
from atrium.store.secrets import SecretStore
from tests.integration.providers.loopback import LoopbackServer
from tests.unit.rag.connectors.conftest import build, collect, split

TOKEN = "tok-0123456789"
ITEMS: list[dict[str, Any]] = [
    {
        "id": i,
        "title": f"Item {i}",
        "body": f"Body of item {i}.",
        "updated": f"2030-01-0{i}T00:00:00Z",
        "tags": {"lang": "en"},
        "url": f"https://example.test/items/{i}",
    }
    for i in range(1, 6)
]


class Api:
    """A small JSON API that records the requests it receives."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.bodies: list[Any] = []
        routes = [
            Route("/items", self.items),
            Route("/pages", self.pages, methods=["GET", "POST"]),
            Route("/cursor", self.cursor),
            Route("/linked/{n:int}", self.linked),
            Route("/auth", self.auth),
            Route("/slow", self.slow),
            Route("/text", self.text),
            Route("/forever", self.forever),
            Route("/to", self.to),
        ]
        self.server = LoopbackServer(Starlette(routes=routes))
        self.other: Api | None = None

    async def _seen(self, request: Request) -> None:
        self.requests.append(request)
        body = await request.body()
        self.bodies.append(json.loads(body) if body else None)

    async def items(self, request: Request) -> Response:
        await self._seen(request)
        broken = [{"title": "no id"}, {"id": 99, "title": "no body"}]
        return JSONResponse({"data": [*ITEMS[:2], *broken]})

    async def pages(self, request: Request) -> Response:
        await self._seen(request)
        source = request.query_params if request.method == "GET" else self.bodies[-1]
        page, size = int(source["page"]), int(source.get("per_page", 2))
        return JSONResponse({"results": ITEMS[(page - 1) * size : page * size]})

    async def cursor(self, request: Request) -> Response:
        await self._seen(request)
        start = int(request.query_params.get("after", "0"))
        following = start + 2 if start + 2 < len(ITEMS) else None
        body = {"results": ITEMS[start : start + 2], "meta": {"next": following}}
        return JSONResponse(body)

    async def linked(self, request: Request) -> Response:
        await self._seen(request)
        n = request.path_params["n"]
        links = {"next": f"/linked/{n + 1}"} if n < 2 else {}
        return JSONResponse({"items": ITEMS[n * 2 : n * 2 + 2], "links": links})

    async def auth(self, request: Request) -> Response:
        await self._seen(request)
        given = request.headers.get("authorization", "")
        if given != f"Bearer {TOKEN}":
            return JSONResponse({"error": f"bad credentials: {given}"}, status_code=401)
        return JSONResponse(ITEMS[:1])

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(2)
        return JSONResponse([])

    async def text(self, request: Request) -> Response:
        return PlainTextResponse("<html>not json</html>")

    async def forever(self, request: Request) -> Response:
        await self._seen(request)
        return JSONResponse({"results": ITEMS[:2]})

    async def to(self, request: Request) -> Response:
        await self._seen(request)
        assert self.other is not None
        return JSONResponse({"items": ITEMS[:1], "next": f"{self.other.server.url}/linked/2"})


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Api, Api]]:
    api, other = Api(), Api()
    api.other = other
    with api.server, other.server:
        yield api, other


@pytest.fixture
def api(servers: tuple[Api, Api]) -> Api:
    for server in servers:
        server.requests.clear()
        server.bodies.clear()
    return servers[0]


def _spec(api: Api, path: str, **fields: Any) -> HttpSource:
    defaults: dict[str, Any] = {"url": f"{api.server.url}{path}", "id": "id", "text": "body"}
    return HttpSource.model_validate(defaults | fields)


async def test_items_become_documents_and_bad_items_failures(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(
        api,
        "/items",
        items="$.data",
        title="title",
        updated="updated",
        link="url",
        metadata={"lang": "tags.lang", "missing": "nope"},
    )
    documents, failures = split(await collect(build(spec, tmp_path, secrets)))
    assert failures == {"page 1 item 3": "has no id at id", "99": "has no text at body"}
    assert list(documents) == ["1", "2"]
    first = documents["1"]
    assert first.data == b"Body of item 1."
    assert first.filename == "1.txt"
    assert first.media_type == "text/plain"
    assert first.title == "Item 1"
    assert first.uri == "https://example.test/items/1"
    assert first.updated_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert first.metadata == {"lang": "en"}


async def test_a_template_builds_the_text_from_fields_and_metadata(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(
        api,
        "/items",
        items="$.data[*]",
        text=None,
        template="# {title} ({lang})\n\n{body}",
        metadata={"lang": "$.tags.lang"},
        media_type="text/markdown",
    )
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert documents["2"].data == b"# Item 2 (en)\n\nBody of item 2."
    assert documents["2"].filename == "2.md"


async def test_page_number_pagination_stops_at_a_short_page(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    pagination = PageNumberPagination(type="page-number", size_param="per_page", size=2)
    spec = _spec(api, "/pages", items="results", pagination=pagination)
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert list(documents) == ["1", "2", "3", "4", "5"]
    pages = [dict(r.query_params) for r in api.requests]
    assert pages == [{"page": str(n), "per_page": "2"} for n in (1, 2, 3)]


async def test_page_number_pagination_without_size_stops_at_an_empty_page(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(api, "/pages", items="results", pagination={"type": "page-number"})
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert len(documents) == 5
    assert len(api.requests) == 4


async def test_post_pagination_goes_in_the_body(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(
        api,
        "/pages",
        method="POST",
        body={"per_page": 3, "filter": {"lang": "en"}},
        items="results",
        pagination={"type": "page-number", "size": 3},
    )
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert len(documents) == 5
    assert api.bodies == [
        {"per_page": 3, "filter": {"lang": "en"}, "page": 1},
        {"per_page": 3, "filter": {"lang": "en"}, "page": 2},
    ]


async def test_cursor_pagination(api: Api, tmp_path: Path, secrets: SecretStore) -> None:
    pagination = CursorPagination(type="cursor", cursor="$.meta.next", param="after")
    spec = _spec(api, "/cursor", items="results", pagination=pagination)
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert list(documents) == ["1", "2", "3", "4", "5"]
    assert [r.query_params.get("after") for r in api.requests] == [None, "2", "4"]


async def test_next_link_pagination_follows_relative_links(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    pagination = NextLinkPagination(type="next-link", next="links.next")
    spec = _spec(api, "/linked/0", items="items", pagination=pagination)
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert list(documents) == ["1", "2", "3", "4", "5"]
    assert [r.url.path for r in api.requests] == ["/linked/0", "/linked/1", "/linked/2"]


async def test_the_auth_header_comes_from_a_secret(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("api-token", TOKEN)
    spec = _spec(api, "/auth", auth_secret="api-token")
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert list(documents) == ["1"]


async def test_a_refused_key_names_status_and_url_but_never_the_key(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("api-token", "wrong-but-secret")
    spec = _spec(api, "/auth", auth_secret="api-token")
    with pytest.raises(ConnectorError) as caught:
        await collect(build(spec, tmp_path, secrets))
    message = str(caught.value)
    assert message.startswith(f"GET {api.server.url}/auth answered 401 Unauthorized")
    assert "bad credentials: Bearer ***" in message
    assert "wrong-but-secret" not in message


async def test_a_missing_secret_is_a_connector_error(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    with pytest.raises(ConnectorError, match="the secret 'absent' does not exist"):
        await collect(build(_spec(api, "/auth", auth_secret="absent"), tmp_path, secrets))


async def test_the_key_is_not_sent_to_another_origin(
    servers: tuple[Api, Api], api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("api-token", TOKEN)
    spec = _spec(
        api,
        "/to",
        items="items",
        auth_secret="api-token",
        auth_header="X-Api-Key",
        auth_scheme="",
        pagination={"type": "next-link", "next": "next"},
    )
    documents, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert list(documents) == ["1", "5"]
    assert api.requests[0].headers["x-api-key"] == TOKEN
    other = servers[1]
    assert [r.url.path for r in other.requests] == ["/linked/2"]
    assert "x-api-key" not in other.requests[0].headers


async def test_a_slow_api_times_out(api: Api, tmp_path: Path, secrets: SecretStore) -> None:
    spec = _spec(api, "/slow", timeout_seconds=0.2)
    with pytest.raises(ConnectorError, match=r"GET .*/slow timed out after 0.2 s"):
        await collect(build(spec, tmp_path, secrets))


@pytest.mark.parametrize(
    ("path", "fields", "error"),
    [
        ("/text", {}, "did not answer with JSON"),
        ("/items", {"items": "$.nothing"}, r"no items at \$.nothing"),
        ("/missing", {}, "answered 404 Not Found"),
        ("/forever", {"items": "results", "pagination": {"type": "page-number"}}, "max_pages"),
    ],
)
async def test_whole_source_failures(
    api: Api, tmp_path: Path, secrets: SecretStore, path: str, fields: dict[str, Any], error: str
) -> None:
    spec = _spec(api, path, max_pages=3, **fields)
    with pytest.raises(ConnectorError, match=error):
        await collect(build(spec, tmp_path, secrets))


async def test_requests_go_through_the_ssrf_guard(
    api: Api, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = _spec(api, "/items", items="$.data")
    with pytest.raises(ConnectorError, match="loopback") as caught:
        await collect(build(spec, tmp_path, secrets, policy=NetworkPolicy()))
    assert caught.value.status == 502
    assert api.requests == []


async def test_documents_hash_their_text(api: Api, tmp_path: Path, secrets: SecretStore) -> None:
    spec = _spec(api, "/items", items="$.data")
    first, _ = split(await collect(build(spec, tmp_path, secrets)))
    again, _ = split(await collect(build(spec, tmp_path, secrets)))
    assert {k: d.content_hash for k, d in first.items()} == {
        k: d.content_hash for k, d in again.items()
    }
    assert first["1"].content_hash != first["2"].content_hash


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"text": None}, "exactly one of text and template"),
        ({"template": "{a}"}, "exactly one of text and template"),
        ({"text": None, "template": "{a.b}"}, "stray"),
        ({"id": "$.["}, "not a valid JSONPath"),
        ({"metadata": {"x": "$.["}}, "not a valid JSONPath"),
        ({"url": "ftp://example.test/x"}, "http or https"),
        ({"headers": {"Host": "internal"}}, "cannot be set"),
        ({"pagination": {"type": "cursor", "cursor": "(("}}, "not a valid JSONPath"),
        ({"pagination": {"type": "sideways"}}, "does not match any of the expected tags"),
    ],
)
def test_invalid_specs_are_refused(fields: dict[str, Any], error: str) -> None:
    base = {"url": "https://api.example.test/items", "id": "id", "text": "body"}
    with pytest.raises(ValidationError, match=error):
        HttpSource.model_validate(base | fields)
