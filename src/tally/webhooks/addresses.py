"""Which URLs a webhook may be sent to (SSRF): checked at registration and again
before every attempt, since DNS can change between the two.

A URL must be https (http too when ``allow_loopback`` is on, for local
development), carry no user or password, and its host must resolve only to
global addresses: never loopback, private, link-local (which holds the cloud
metadata address 169.254.169.254), multicast, unspecified, reserved, shared
(100.64.0.0/10, which holds Alibaba's metadata address) or documentation
ranges; an IPv4-mapped IPv6 address is judged as the IPv4 one it maps. If any
address a name resolves to is refused, the name is refused. The attempt then
connects to the address that was checked, never resolving the name again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from tally.errors import UrlNotAllowed

URL_CHARS_MAX = 2048
ADDRESSES_MAX = 16
RESOLVE_TIMEOUT_SECONDS = 5.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Named although is_global already refuses them: what an attacker aims for.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart, ready to be connected to at a checked address."""

    url: str
    scheme: str
    host: str  # as in the URL, for the Host header and TLS's server name
    port: int
    path: str  # path and query


def parse(url: str, *, allow_loopback: bool) -> Target:
    if len(url) > URL_CHARS_MAX or any(c in url for c in "\x00\r\n\t "):
        raise UrlNotAllowed(f"The URL must be at most {URL_CHARS_MAX} characters, no spaces.")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlNotAllowed("Not a URL Tally can call.") from None
    schemes = ("https", "http") if allow_loopback else ("https",)
    if parts.scheme not in schemes:
        raise UrlNotAllowed("A webhook URL must start with https://.")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("A webhook URL must not carry a user or password.")
    if not parts.hostname:
        raise UrlNotAllowed("A webhook URL must name a host.")
    if parts.fragment:
        raise UrlNotAllowed("A webhook URL must not have a #fragment.")
    if port == 0:
        raise UrlNotAllowed("A webhook URL's port must be 1-65535.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, parts.hostname, default_port if port is None else port, path)


def refusal(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why an address is refused, or None if a webhook may go there."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    for kind, refused in (
        ("an unspecified address", address.is_unspecified),
        ("a multicast address", address.is_multicast),
        ("a link-local address", address.is_link_local),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("an address that is not public", not address.is_global),
    ):
        if refused:
            return kind
    return None


async def resolve(target: Target, *, allow_loopback: bool) -> list[IPAddress]:
    """The host's addresses, every one of them allowed; else UrlNotAllowed."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        found = await _lookup(target.host, target.port)
    for address in found:
        why = refusal(address, allow_loopback=allow_loopback)
        if why is not None:
            raise UrlNotAllowed(
                f"The host {target.host} resolves to {why}, which Tally never calls."
            )
    return found


async def _lookup(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise UrlNotAllowed(f"The host {host} does not resolve.") from None
    found: list[IPAddress] = []
    for info in infos[:ADDRESSES_MAX]:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UrlNotAllowed(f"The host {host} does not resolve.")
    return found


async def check(url: str, *, allow_loopback: bool) -> tuple[Target, list[IPAddress]]:
    """Parse and resolve; raise UrlNotAllowed for anything a webhook may not call."""
    target = parse(url, allow_loopback=allow_loopback)
    return target, await resolve(target, allow_loopback=allow_loopback)
