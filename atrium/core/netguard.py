"""Outbound HTTP that cannot be pointed at the platform's own network (SSRF guard).

Any URL a user supplies (a connector's API, a workflow's HTTP node) is fetched with
:func:`guarded_client`. Its transport checks every request, redirect hops included, for
an allowed scheme and no credentials in the URL, and its network backend resolves the
host itself, refuses the connection when any resolved address is private, loopback,
link-local, multicast, reserved or unspecified (IPv4-mapped, 6to4 and NAT64 forms
included), and then connects to exactly the addresses it vetted. Resolving once and
connecting to the result is what defeats DNS rebinding; TLS still verifies the
certificate against the host name, since the connection's origin never changes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Final, TypeVar

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from atrium.core.errors import InvalidRequestError

IPAddress = IPv4Address | IPv6Address

#: Cloud instance metadata services: link-local, and refused even with ``allow_private``.
METADATA_ADDRESSES: Final = frozenset(
    {ip_address("169.254.169.254"), ip_address("169.254.170.2"), ip_address("fd00:ec2::254")}
)
_NAT64: Final = IPv6Network("64:ff9b::/96")
# Kinds of address that allow_private opens; the others stay closed whatever the policy.
_PRIVATE_KINDS: Final = frozenset({"loopback", "link-local", "private", "non-public"})
_DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class BlockedDestinationError(InvalidRequestError):
    """A request was refused because of where it would go; the message says why."""

    default_code = "blocked_destination"

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host}: {reason}")
        self.host = host
        self.reason = reason


class NetworkPolicy(BaseModel):
    """Where outbound requests to user-supplied URLs may go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_private: bool = Field(
        False,
        description=(
            "Also allow private, loopback and link-local addresses (an on-premises "
            "deployment calling its own services). Cloud metadata addresses stay refused."
        ),
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        description=(
            "Host names (or literal IPs as written in URLs) exempt from the address "
            "checks; '*.example.internal' matches every subdomain."
        ),
    )
    allowed_networks: tuple[IPvAnyNetwork, ...] = Field(
        (), description="Networks (CIDR) whose addresses are allowed even when private."
    )
    allowed_schemes: tuple[str, ...] = Field(
        ("http", "https"), description="URL schemes that may be requested."
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_normalise_host(host) for host in hosts)

    @field_validator("allowed_schemes")
    @classmethod
    def _known_schemes(cls, schemes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(schemes) - {"http", "https"}
        if unknown:
            msg = f"only http and https can be allowed, not {sorted(unknown)}"
            raise ValueError(msg)
        return schemes

    def host_is_allowed(self, host: str) -> bool:
        """Whether ``host`` is on the allow-list (exactly or as a ``*.`` subdomain)."""
        host = _normalise_host(host)
        for allowed in self.allowed_hosts:
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False

    def address_refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be connected to under this policy, or None if it may."""
        embedded = _embedded_ipv4(address)
        # An IPv6 form that carries an IPv4 address reaches that IPv4 address.
        effective = embedded if embedded is not None else address
        if any(a in net for a in (address, effective) for net in self.allowed_networks):
            return None
        kind = address_kind(effective)
        if kind is None or (self.allow_private and kind in _PRIVATE_KINDS):
            return None
        if embedded is not None:
            return f"{address} embeds {embedded}, {_article(kind)} {kind} address"
        return f"{address} is {_article(kind)} {kind} address"


def address_kind(address: IPAddress) -> str | None:
    """The kind of non-public address this is ("loopback", "private", ...), or None."""
    checks: tuple[tuple[bool, str], ...] = (
        (address in METADATA_ADDRESSES, "cloud metadata"),
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (isinstance(address, IPv6Address) and address.is_site_local, "private"),
        (not address.is_global, "non-public"),
    )
    return next((kind for hit, kind in checks if hit), None)


def check_url(url: httpx.URL | str, policy: NetworkPolicy) -> None:
    """Refuse a URL whose scheme is not allowed, that carries credentials or has no host."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    host = parsed.host or "(no host)"
    if parsed.scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes)
        raise BlockedDestinationError(host, f"the scheme {parsed.scheme!r} is not {allowed}")
    if parsed.userinfo:
        raise BlockedDestinationError(host, "URLs with credentials in them are not allowed")
    if not parsed.host:
        raise BlockedDestinationError(host, "the URL has no host")


async def resolve_and_vet(host: str, port: int, policy: NetworkPolicy) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing if any of them is forbidden.

    Every address must pass, not just the first: a name with one public and one private
    address would otherwise reach the private one on a retry or a second connection.
    A name that does not resolve raises :class:`socket.gaierror` (an ``OSError``).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if policy.host_is_allowed(host):
        return addresses
    for address in addresses:
        refusal = policy.address_refusal(ip_address(address.split("%", 1)[0]))
        if refusal is not None:
            raise BlockedDestinationError(host, refusal)
    return addresses


S = TypeVar("S")


async def connect_first(
    addresses: list[str],
    connect: Callable[[str], Awaitable[S]],
    failures: tuple[type[Exception], ...],
) -> S:
    """The first of the vetted ``addresses`` that accepts a connection (the last failure
    when none does). Shared by every HTTP stack that connects through the guard."""
    failure: Exception | None = None
    for address in addresses:
        try:
            return await connect(address)
        except failures as exc:
            failure = exc
    assert failure is not None  # getaddrinfo never answers an empty list
    raise failure


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """Resolves and vets the host, then connects to one of exactly those addresses."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve_and_vet(host, port, self._policy)
        except TimeoutError:
            msg = f"resolving {host} timed out"
            raise httpcore.ConnectTimeout(msg) from None
        except socket.gaierror as exc:
            msg = f"cannot resolve {host}: {exc.strerror}"
            raise httpcore.ConnectError(msg) from None
        return await connect_first(
            addresses,
            lambda address: self._inner.connect_tcp(
                address, port, timeout, local_address, socket_options
            ),
            (httpcore.ConnectError, httpcore.ConnectTimeout),
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedDestinationError(path, "unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with every request URL checked and every connection vetted."""

    def __init__(
        self,
        policy: NetworkPolicy,
        *,
        verify: bool = True,
        limits: httpx.Limits = _DEFAULT_LIMITS,
    ) -> None:
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self._policy = policy
        # httpx builds its pool without a way to choose the network backend, so the pool
        # is rebuilt with the same settings and the vetting backend (httpx is pinned).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_VettingBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the URL (this runs again for every redirect hop), then send."""
        check_url(request.url, self._policy)
        return await super().handle_async_request(request)


def guarded_client(
    policy: NetworkPolicy,
    *,
    timeout: float | httpx.Timeout = 10.0,
    max_redirects: int = 5,
    follow_redirects: bool = True,
    headers: dict[str, str] | None = None,
    verify: bool = True,
) -> httpx.AsyncClient:
    """An httpx client for user-supplied URLs: the only way such URLs should be fetched.

    Environment proxies are ignored (a proxy would be the one connecting, unchecked).
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, verify=verify),
        timeout=timeout,
        max_redirects=max_redirects,
        follow_redirects=follow_redirects,
        headers=headers,
        trust_env=False,
    )


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


__all__ = [
    "METADATA_ADDRESSES",
    "BlockedDestinationError",
    "GuardedTransport",
    "NetworkPolicy",
    "address_kind",
    "check_url",
    "guarded_client",
    "resolve_and_vet",
]
