"""Outbound HTTP that only reaches where the operator's SSRF policy allows (SPEC section 10).

``make_client`` gives an httpx client whose every connection passes ``GuardedBackend``: the host
is resolved once, the name and every address are checked with ``domain/netpolicy``, and the
socket connects to an address that passed while TLS still verifies (and sends SNI for) the
original name, so DNS cannot change between check and connect (rebinding). The client never
follows redirects itself (callers re-check each hop by sending it through the same client) and
ignores proxy variables and ``.netrc``: a proxy would connect to addresses nobody checked.
Used by the ``api`` and ``llm`` kinds.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from functools import cache
from typing import Any

import anyio
import httpcore
import httpx

from turbocat.config import HttpRuntimeSettings
from turbocat.domain.netpolicy import AddressRefused, IPAddress, NetPolicy

__all__ = ["AddressRefused", "GuardedBackend", "ResolveError", "Resolver", "make_client", "resolve"]


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class ResolveError(Exception):
    """The host name did not resolve (a retryable connection failure)."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolveError(f"could not resolve {host}: {exc}") from None
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop a scope id
        if address not in out:
            out.append(address)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, checks the name and every address, connects to a checked address."""

    def __init__(self, policy: NetPolicy, resolver: Resolver = resolve) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.policy.check_name(host)
        with anyio.fail_after(timeout):
            addresses = await self.resolver(host, port)
        self.policy.check_addresses(host, addresses)
        failure: Exception | None = None
        for address in addresses:  # all passed; try them in order like any client would
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # check_addresses refuses an empty answer
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - never configured
        raise AddressRefused(path, "unix sockets are not reachable by outbound requests")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@cache
def _ssl_context() -> ssl.SSLContext:
    # certifi's CAs (or SSL_CERT_FILE / SSL_CERT_DIR); built once, it takes milliseconds
    return httpx.create_ssl_context(trust_env=True)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose connections pass ``GuardedBackend``."""

    def __init__(self, backend: GuardedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx has no public way to give its pool a network backend; the pool is the only
        # thing replaced, request/response mapping stays httpx's own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=10, network_backend=backend
        )


def make_client(
    settings: HttpRuntimeSettings,
    timeout: float,
    *,
    resolver: Resolver = resolve,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """A client that never follows redirects itself, ignores proxy variables and .netrc, and
    connects only where the operator's policy allows."""
    policy = NetPolicy.parse(
        enabled=settings.ssrf_protection, allow=settings.allow, deny=settings.deny
    )
    context = ssl_context or _ssl_context()
    transport = GuardedTransport(GuardedBackend(policy, resolver), context)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
