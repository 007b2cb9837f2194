"""The HTTP Request block against a real aiohttp server on 127.0.0.1, through the SSRF guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from pydantic import ValidationError

from atrium.core.netguard import NetworkPolicy
from atrium.workflows.blocks.base import BlockContext, BlockError
from atrium.workflows.blocks.http import HttpRequestBlock
from tests.unit.workflows.block_doubles import (
    LOOPBACK_POLICY,
    MemorySecrets,
    make_context,
    make_services,
    run_block,
)

SECRET = "sk-very-secret-value"
SECRETS = MemorySecrets({"api_token": SECRET, "other": "zz-other"})


class Api:
    """A small API that records what it was sent."""

    def __init__(self) -> None:
        self.hits = 0
        self.requests: list[dict[str, object]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/echo", self.echo)
        self.app.router.add_get("/status/{code}", self.status)
        self.app.router.add_get("/big", self.big)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/bad-json", self.bad_json)
        self.app.router.add_get("/text", self.text)
        self.app.router.add_get("/redirect", self.redirect)

    async def _record(self, request: web.Request) -> dict[str, object]:
        self.hits += 1
        seen: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": (await request.read()).decode(),
        }
        self.requests.append(seen)
        return seen

    async def echo(self, request: web.Request) -> web.Response:
        seen = await self._record(request)
        headers = {"X-Echo-Token": request.headers.get("X-Api-Key", "")}
        return web.json_response(seen, headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code} because {'x' * 500}")

    async def big(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="y" * 2000)

    async def slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def bad_json(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="{not json", content_type="application/json")

    async def text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="héllo", charset="utf-8")

    async def redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound(request.query["to"])


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, BaseTestServer]]:
    """The API on a free port of 127.0.0.1."""
    target = Api()
    async with TestServer(target.app, host="127.0.0.1") as server:
        yield target, server


def _url(server: BaseTestServer, path: str) -> str:
    return str(server.make_url(path))


def _ctx(tmp_path: Path, policy: NetworkPolicy = LOOPBACK_POLICY) -> BlockContext:
    return make_context(make_services(tmp_path, secrets=SECRETS, policy=policy))


async def test_get_renders_templates_and_sends_secret_headers(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {
        "url": _url(server, "/echo") + "?fixed=1",
        "headers": {"X-Trace": "run {{ vars.trace }}"},
        "secret_headers": {"Authorization": "other"},
        "query": {"q": "{{ data.term }}", "limit": 3},
    }
    ctx = make_context(
        make_services(tmp_path, secrets=SECRETS, policy=LOOPBACK_POLICY),
        variables={"trace": "abc"},
    )
    result = await run_block(HttpRequestBlock(), config, ctx, {"data": {"term": "a b"}})
    seen = target.requests[0]
    assert seen["query"] == {"fixed": "1", "q": "a b", "limit": "3"}
    assert seen["headers"]["X-Trace"] == "run abc"  # type: ignore[index]
    assert seen["headers"]["Authorization"] == "zz-other"  # type: ignore[index]
    # The same key on every attempt and replay: the receiver can drop a repeat.
    assert seen["headers"]["Idempotency-Key"] == ctx.idempotency_key  # type: ignore[index]
    assert ctx.idempotency_key == f"{ctx.run_id}:{ctx.node_id}"
    assert result.outputs["status"] == 200
    assert result.outputs["json"]["method"] == "GET"
    assert result.outputs["headers"]["content-type"].startswith("application/json")
    assert '"method": "GET"' in result.outputs["body"]


async def test_post_json_body_renders_string_values(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {
        "method": "POST",
        "url": _url(server, "/echo"),
        "body": {"name": "{{ data.name }}", "count": 2, "tags": ["{{ data.tag }}", None]},
    }
    result = await run_block(
        HttpRequestBlock(), config, _ctx(tmp_path), {"data": {"name": "Ada", "tag": "x"}}
    )
    assert result.outputs["status"] == 200
    seen = target.requests[0]
    assert seen["headers"]["Content-Type"] == "application/json"  # type: ignore[index]
    assert seen["body"] == '{"name":"Ada","count":2,"tags":["x",null]}'


async def test_post_string_body_is_sent_as_rendered(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {
        "method": "PUT",
        "url": _url(server, "/echo"),
        "headers": {"Content-Type": "application/json"},
        "body": '{"payload": {{ data | tojson }}}',
    }
    await run_block(HttpRequestBlock(), config, _ctx(tmp_path), {"data": {"k": [1, 2]}})
    assert target.requests[0]["method"] == "PUT"
    assert target.requests[0]["body"] == '{"payload": {"k": [1, 2]}}'


async def test_secret_values_are_redacted_from_everything_the_block_returns(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {"url": _url(server, "/echo"), "secret_headers": {"X-Api-Key": "api_token"}}
    result = await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    assert target.requests[0]["headers"]["X-Api-Key"] == SECRET  # type: ignore[index]
    assert SECRET not in repr(result.outputs)
    assert result.outputs["headers"]["x-echo-token"] == "[redacted]"
    assert result.outputs["json"]["headers"]["X-Api-Key"] == "[redacted]"


async def test_a_status_outside_2xx_fails_with_an_excerpt(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    config = {"url": _url(server, "/status/503"), "secret_headers": {"X-Api-Key": "api_token"}}
    with pytest.raises(
        BlockError, match=r"GET http://127\.0\.0\.1:\d+/status/503 answered 503: "
    ) as failure:
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    message = str(failure.value)
    assert "status 503 because" in message
    assert len(message) < 400
    assert SECRET not in message


async def test_fail_on_status_false_returns_the_status(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    config = {"url": _url(server, "/status/404"), "fail_on_status": False}
    result = await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    assert result.outputs["status"] == 404
    assert result.outputs["json"] is None
    assert result.outputs["body"].startswith("status 404")


async def test_text_responses_are_decoded_by_their_charset(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    result = await run_block(HttpRequestBlock(), {"url": _url(server, "/text")}, _ctx(tmp_path))
    assert result.outputs["body"] == "héllo"
    assert result.outputs["json"] is None


async def test_a_response_over_the_size_limit_fails(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    config = {"url": _url(server, "/big"), "max_response_bytes": 1000}
    with pytest.raises(BlockError, match="over the limit of 1000"):
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))


async def test_expect_json_fails_on_a_body_that_is_not_json(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    lenient = await run_block(
        HttpRequestBlock(), {"url": _url(server, "/bad-json")}, _ctx(tmp_path)
    )
    assert lenient.outputs["json"] is None
    config = {"url": _url(server, "/text"), "expect_json": True}
    with pytest.raises(BlockError, match="the response is not JSON"):
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))


async def test_a_slow_server_times_out(api: tuple[Api, BaseTestServer], tmp_path: Path) -> None:
    _, server = api
    config = {"url": _url(server, "/slow"), "timeout_seconds": 0.2}
    with pytest.raises(BlockError, match=r"no answer within 0\.2 s"):
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))


async def test_a_missing_secret_fails_naming_the_secret(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {"url": _url(server, "/echo"), "secret_headers": {"X-Api-Key": "absent"}}
    with pytest.raises(BlockError, match="no secret named 'absent'"):
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    assert target.hits == 0


# -- the network policy -------------------------------------------------------------------


async def test_the_default_policy_refuses_loopback_before_connecting(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    ctx = _ctx(tmp_path, policy=NetworkPolicy())
    with pytest.raises(BlockError, match=r"refused to connect to 127\.0\.0\.1: .*loopback"):
        await run_block(HttpRequestBlock(), {"url": _url(server, "/echo")}, ctx)
    assert target.hits == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:9/", "loopback"),
        ("ftp://example.com/file", "scheme 'ftp'"),
        ("http://user:pw@example.com/", "credentials"),
    ],
)
async def test_the_default_policy_refuses_internal_destinations(
    url: str, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(BlockError, match=reason):
        await run_block(HttpRequestBlock(), {"url": url}, _ctx(tmp_path, policy=NetworkPolicy()))


async def test_metadata_stays_refused_even_with_allow_private(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, policy=NetworkPolicy(allow_private=True))
    with pytest.raises(BlockError, match="cloud metadata"):
        await run_block(HttpRequestBlock(), {"url": "http://169.254.169.254/"}, ctx)


async def test_a_redirect_to_a_forbidden_address_is_refused(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    config = {"url": _url(server, "/redirect"), "query": {"to": "http://10.0.0.1/admin"}}
    with pytest.raises(BlockError, match=r"10\.0\.0\.1.*private"):
        await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    assert target.hits == 1


async def test_secret_headers_follow_same_origin_redirects_only(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    other = Api()
    async with TestServer(other.app, host="127.0.0.1") as elsewhere:
        for destination, receiver in ((server, target), (elsewhere, other)):
            config = {
                "url": _url(server, "/redirect"),
                "query": {"to": _url(destination, "/echo")},
                "secret_headers": {"X-Api-Key": "api_token"},
                "headers": {"X-Plain": "kept"},
            }
            result = await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
            assert result.outputs["status"] == 200
            headers = receiver.requests[-1]["headers"]
            assert headers["X-Plain"] == "kept"  # type: ignore[index]
    assert target.requests[-1]["headers"]["X-Api-Key"] == SECRET  # type: ignore[index]
    assert "X-Api-Key" not in other.requests[-1]["headers"]  # type: ignore[operator]


async def test_redirects_are_not_followed_when_turned_off(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    _, server = api
    config = {
        "url": _url(server, "/redirect"),
        "query": {"to": "/echo"},
        "follow_redirects": False,
        "fail_on_status": False,
    }
    result = await run_block(HttpRequestBlock(), config, _ctx(tmp_path))
    assert result.outputs["status"] == 302
    assert result.outputs["headers"]["location"] == "/echo"


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"url": "{{ broken"}, "invalid template"),
        ({"url": "http://x", "headers": {"Bad Header": "v"}}, "not a valid header name"),
        ({"url": "http://x", "secret_headers": {"X-Key": "no spaces allowed"}}, "secret name"),
        (
            {"url": "http://x", "headers": {"x-key": "a"}, "secret_headers": {"X-Key": "k"}},
            "both headers and secret_headers",
        ),
        ({"url": "http://x", "body": {"a": ["{% for %}"]}}, "invalid template"),
        ({"url": "http://x", "method": "TRACE"}, "method"),
        ({"url": "http://x", "max_response_bytes": 0}, "max_response_bytes"),
    ],
)
def test_http_config_is_checked(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        HttpRequestBlock().parse_config(config)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("{{ data.url }}", "invalid URL"),
        ("not a url", "scheme ''"),
        ("http://", "no host"),
    ],
)
async def test_an_invalid_rendered_url_is_a_block_error(
    url: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(BlockError, match=problem):
        await run_block(
            HttpRequestBlock(), {"url": url}, _ctx(tmp_path), {"data": {"url": "http://a\x00b/"}}
        )
