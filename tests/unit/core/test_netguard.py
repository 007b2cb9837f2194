"""The SSRF guard, against a real server on 127.0.0.1 that only an allow-list reaches."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_address

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from atrium.core.netguard import (
    BlockedDestinationError,
    NetworkPolicy,
    address_kind,
    check_url,
    guarded_client,
    resolve_and_vet,
)
from tests.integration.providers.loopback import LoopbackServer

DEFAULT = NetworkPolicy()
LOCAL_ONLY = NetworkPolicy(allowed_hosts=("127.0.0.1",))


class Target:
    """A loopback server that counts the requests it receives."""

    def __init__(self) -> None:
        self.hits = 0
        self.server = LoopbackServer(
            Starlette(
                routes=[
                    Route("/", self._hello),
                    Route("/to", self._redirect),
                    Route("/loop/{n:int}", self._loop),
                ]
            )
        )

    async def _hello(self, request: Request) -> Response:
        self.hits += 1
        return PlainTextResponse(f"hello {request.headers['host']}")

    async def _redirect(self, request: Request) -> Response:
        self.hits += 1
        return RedirectResponse(request.query_params["url"], status_code=302)

    async def _loop(self, request: Request) -> Response:
        self.hits += 1
        return RedirectResponse(f"/loop/{request.path_params['n'] + 1}", status_code=302)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    target = Target()
    with target.server:
        yield target


@pytest.fixture(autouse=True)
def _reset_hits(target: Target) -> None:
    target.hits = 0


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "non-public"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd00::1", "private"),
        ("fe80::1", "link-local"),
        ("fec0::1", "private"),
        ("ff02::1", "multicast"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ip_address(address)) == kind


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:a00:1::", "10.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
    ],
)
def test_ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address(
    address: str, embedded: str
) -> None:
    refusal = DEFAULT.address_refusal(ip_address(address))
    assert refusal is not None
    assert f"embeds {embedded}" in refusal
    assert DEFAULT.address_refusal(ip_address("::ffff:8.8.8.8")) is None


def test_allow_private_opens_private_addresses_but_never_metadata() -> None:
    policy = NetworkPolicy(allow_private=True)
    assert policy.address_refusal(ip_address("10.0.0.1")) is None
    assert policy.address_refusal(ip_address("::ffff:127.0.0.1")) is None
    assert "cloud metadata" in (policy.address_refusal(ip_address("169.254.169.254")) or "")
    assert "multicast" in (policy.address_refusal(ip_address("224.0.0.1")) or "")


def test_allowed_networks_and_wildcard_hosts() -> None:
    policy = NetworkPolicy(allowed_networks=("10.0.0.0/8",), allowed_hosts=("*.corp.example",))
    assert policy.address_refusal(ip_address("10.9.9.9")) is None
    assert policy.address_refusal(ip_address("::ffff:10.9.9.9")) is None
    assert policy.address_refusal(ip_address("192.168.0.1")) is not None
    assert policy.host_is_allowed("API.corp.example.")
    assert not policy.host_is_allowed("corp.example.evil.test")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/file", "scheme 'ftp'"),
        ("http://user:secret@example.com/", "credentials"),
    ],
)
def test_check_url_refuses_schemes_and_credentials(url: str, reason: str) -> None:
    with pytest.raises(BlockedDestinationError, match=reason) as caught:
        check_url(url, DEFAULT)
    assert "secret" not in str(caught.value)


def test_https_only_policy_refuses_http() -> None:
    with pytest.raises(BlockedDestinationError, match="'http' is not https"):
        check_url("http://example.com/", NetworkPolicy(allowed_schemes=("https",)))


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... as hexadecimal
        "127.1",  # ... with the zero octets left out
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
    ],
)
async def test_every_spelling_of_loopback_is_refused(target: Target, host: str) -> None:
    async with guarded_client(DEFAULT) as client:
        with pytest.raises(BlockedDestinationError) as caught:
            await client.get(f"http://{host}:{target.server.port}/")
    assert "loopback" in caught.value.reason
    assert target.hits == 0


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/", "http://10.0.0.1/"],
)
async def test_private_destinations_are_refused_before_connecting(url: str) -> None:
    async with guarded_client(DEFAULT, timeout=1.0) as client:
        with pytest.raises(BlockedDestinationError, match="refused to connect"):
            await client.get(url)


async def test_an_allow_listed_host_reaches_the_local_server(target: Target) -> None:
    async with guarded_client(LOCAL_ONLY) as client:
        response = await client.get(f"{target.server.url}/")
    assert response.text == f"hello 127.0.0.1:{target.server.port}"
    assert target.hits == 1


async def test_an_allowed_network_admits_a_numeric_spelling(target: Target) -> None:
    policy = NetworkPolicy(allowed_networks=("127.0.0.0/8",))
    async with guarded_client(policy) as client:
        response = await client.get(f"http://2130706433:{target.server.port}/")
    # The Host header keeps the name as written; the connection went to the vetted IP.
    assert response.text == f"hello 2130706433:{target.server.port}"


async def test_a_redirect_to_a_private_address_is_refused(target: Target) -> None:
    async with guarded_client(LOCAL_ONLY) as client:
        for destination in (
            f"http://localhost:{target.server.port}/",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
        ):
            with pytest.raises(BlockedDestinationError):
                await client.get(f"{target.server.url}/to", params={"url": destination})
    assert target.hits == 3  # the redirecting hop only, each time


async def test_redirects_are_limited_to_five_hops(target: Target) -> None:
    async with guarded_client(LOCAL_ONLY) as client:
        with pytest.raises(httpx.TooManyRedirects):
            await client.get(f"{target.server.url}/loop/0")
    assert target.hits == 6


async def test_an_unresolvable_host_is_a_connect_error() -> None:
    async with guarded_client(DEFAULT, timeout=5.0) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve"):
            await client.get("http://no-such-host.invalid/")


async def test_resolve_and_vet_returns_the_addresses_it_checked() -> None:
    policy = NetworkPolicy(allowed_networks=("127.0.0.0/8", "::1/128"))
    addresses = await resolve_and_vet("localhost", 80, policy)
    assert "127.0.0.1" in addresses
    with pytest.raises(BlockedDestinationError, match="localhost"):
        await resolve_and_vet("localhost", 80, NetworkPolicy(allowed_networks=("::1/128",)))


async def test_resolve_and_vet_lets_resolution_errors_through() -> None:
    with pytest.raises(socket.gaierror):
        await resolve_and_vet("no-such-host.invalid", 80, DEFAULT)
