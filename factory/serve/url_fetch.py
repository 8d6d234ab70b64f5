"""Fetch an image a client names by URL without letting the client aim us at our own network.

Only http(s). Every address a host name resolves to must be public (or inside a network
the config allows): the check runs inside the connector's resolver, so the address that
was checked is the address connected to (no second lookup that DNS rebinding could
answer differently). Redirects are followed by hand, each hop checked the same way. The
body is read in chunks and abandoned past the byte limit; the whole fetch has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from factory.serve.api_errors import ApiError
from factory.serve.serve_config import UrlFetchConfig

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
# What the C library's inet_aton reads as IPv4 (1 to 4 parts, decimal, octal or hex):
# 2130706433, 0177.0.0.1, 127.1 and 0x7f.1 all connect to 127.0.0.1.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


class ForbiddenAddress(OSError):
    """A URL's host is (or resolves to) an address the server must not connect to."""


def address_problem(address: IpAddress, allowed: Sequence[IpNetwork]) -> str | None:
    """Why `address` may not be fetched from, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowed):
        return None
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is a {label} address"
    # anything else that is not globally routable (shared address space 100.64/10, ...)
    return None if address.is_global else f"{address} is not a public address"


def literal_address(host: str) -> IpAddress | None:
    """The address a host spells in any form a resolver would read as one, else None.

    Besides canonical forms this catches what inet_aton accepts (`2130706433`, `0177.0.0.1`,
    `127.1`, `0`) and a trailing root dot (`127.0.0.1.`), so every spelling of a forbidden
    address gets the same 403, decided before any connection.
    """
    bare = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not _LEGACY_IPV4.match(bare):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None  # not an address after all (say, a part above 255): left to DNS


class GuardedResolver(AbstractResolver):
    """Resolves like the system does, then refuses if any answer is not allowed."""

    def __init__(self, allowed: Sequence[IpNetwork]):
        self.allowed = allowed
        self.system = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.system.resolve(host, port, family)
        for answer in answers:
            problem = address_problem(ipaddress.ip_address(answer["host"]), self.allowed)
            if problem:
                # every answer must pass: a client controls which one we would connect to
                raise ForbiddenAddress(f"{host} resolves to {answer['host']}: {problem}")
        return answers

    async def close(self) -> None:
        await self.system.close()


class ImageFetcher:
    """GETs image bytes from http(s) URLs under the config's address, size and time limits."""

    def __init__(self, config: UrlFetchConfig, max_bytes: int):
        self.config, self.max_bytes = config, max_bytes
        self.allowed = [
            ipaddress.ip_network(cidr, strict=False) for cidr in config.allowed_networks
        ]

    async def fetch(self, url: str) -> bytes:
        if not self.config.enabled:
            raise ApiError(400, "url_fetch_disabled", "this server does not fetch image URLs")
        try:
            return await asyncio.wait_for(self._fetch(url), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                422,
                "image_fetch_timeout",
                f"fetching {url} took longer than {self.config.timeout_s:g} s",
            ) from None

    async def _fetch(self, url: str) -> bytes:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.allowed), use_dns_cache=False
        )
        # trust_env=False: no proxy from the environment can carry the request elsewhere
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            current = self._checked(url)
            for _ in range(self.config.max_redirects + 1):
                async with _get(session, current) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        current = self._checked(
                            str(current.join(URL(response.headers["Location"])))
                        )
                        continue
                    return await self._body(response, current)
        raise ApiError(
            422,
            "too_many_redirects",
            f"{url} redirected more than {self.config.max_redirects} times",
        )

    def _checked(self, url: str) -> URL:
        """The URL when its scheme and (literal) host are acceptable; else a 4xx."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as error:
            raise ApiError(400, "invalid_url", f"{url!r} is not a URL: {error}") from error
        if parsed.scheme not in ("http", "https"):
            raise ApiError(
                400,
                "unsupported_url_scheme",
                f"image URLs must be http or https, not {parsed.scheme or 'schemeless'!r}",
            )
        if not parsed.host:
            raise ApiError(400, "invalid_url", f"{url!r} names no host")
        literal = literal_address(parsed.host)
        if literal is None:
            return parsed  # a name: the resolver checks what it resolves to
        # the connector skips the resolver for literal addresses, so they are checked here
        if problem := address_problem(literal, self.allowed):
            raise ApiError(403, "url_forbidden", f"refusing to fetch {url}: {problem}")
        return parsed

    async def _body(self, response: aiohttp.ClientResponse, url: URL) -> bytes:
        if response.status != 200:
            raise ApiError(
                422, "image_fetch_failed", f"fetching {url} answered HTTP {response.status}"
            )
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise self._too_large(url, declared)
        data = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            data += chunk
            if len(data) > self.max_bytes:
                raise self._too_large(url, len(data))
        return bytes(data)

    def _too_large(self, url: URL, size: int) -> ApiError:
        return ApiError(
            413,
            "image_too_large",
            f"{url} sends more than {self.max_bytes:,} bytes (at least {size:,})",
        )


def _forbidden_cause(error: BaseException) -> ForbiddenAddress | None:
    """The resolver's refusal, however aiohttp wrapped it (os_error, cause or context)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ForbiddenAddress):
            return current
        seen.add(id(current))
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return None


@contextlib.asynccontextmanager
async def _get(session: aiohttp.ClientSession, url: URL) -> AsyncIterator[aiohttp.ClientResponse]:
    """`session.get` without automatic redirects; connection errors become 4xx answers."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            yield response
    except aiohttp.ClientConnectorError as error:
        if forbidden := _forbidden_cause(error):
            raise ApiError(403, "url_forbidden", f"refusing to fetch {url}: {forbidden}") from None
        raise ApiError(
            422, "image_fetch_failed", f"cannot connect to {url.host}: {error.os_error}"
        ) from None
    except aiohttp.ClientError as error:
        raise ApiError(422, "image_fetch_failed", f"fetching {url} failed: {error}") from None
