"""The real client behind trusted proxies (``TALLY_TRUSTED_PROXIES``).

A load balancer connects to Tally on the client's behalf, so the socket's peer is
the proxy, and every rate-limit bucket keyed by address and every audit row would
name it. Proxies say who they forwarded for in ``X-Forwarded-For``, one address
appended per hop; but any client can send that header too, with whatever it likes
in it. So it is believed only when the peer is a proxy the operator named, and read
from the right: each trusted hop vouches for the address it appended, and the first
address (from the right) that is not a trusted proxy is the client. Whatever stands
left of it was written by that client and is ignored.

``X-Forwarded-Proto`` from a trusted peer sets the scheme, so that a proxy that
terminates TLS still gets ``Strict-Transport-Security`` on its answers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Bounds on what one request may make us parse: a header longer than this, or
# with more hops, is read only as far as these limits (the rightmost hops).
HOPS_MAX = 32
HOP_CHARS_MAX = 64


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; ValueError names a bad one."""
    networks = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_hop(text: str) -> Address | None:
    """One hop of X-Forwarded-For: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` or
    ``[::1]:5678``; None for anything else (``unknown``, a name, garbage)."""
    text = text.strip()
    if not text or len(text) > HOP_CHARS_MAX:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 address mapped into IPv6 is that IPv4 address, whichever way it came.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Decides, per request, which address is the client's."""

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in n for n in self.networks)

    def client(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address, given the socket peer and the X-Forwarded-For
        header lines in the order they arrived."""
        if not self.trusts(parse_hop(peer)):
            return peer  # a client talking to us directly: its header means nothing
        hops = _hops(forwarded_for)
        client = peer
        for hop in reversed(hops):
            address = parse_hop(hop)
            if address is None:
                # Not an address: no trusted proxy wrote it, so stop at the last
                # hop a trusted proxy vouched for rather than believe it.
                return client
            client = str(address)
            if not self.trusts(address):
                return client
        # Every hop was a trusted proxy: the leftmost is as far as anyone vouches.
        return client

    def rewrite(self, scope: Scope) -> None:
        """Put the real client (and scheme) in the ASGI scope, where every reader of
        ``request.client`` (rate limits, audit rows, the access log) finds it."""
        peer = scope.get("client")
        if not peer or not self.trusts(parse_hop(peer[0])):
            return
        forwarded_for: list[str] = []
        proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").rpartition(",")[2].strip().lower()
        if forwarded_for:
            client = self.client(peer[0], forwarded_for)
            if client != peer[0]:
                scope["client"] = (client, 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto


def _hops(lines: Sequence[str]) -> list[str]:
    """The rightmost HOPS_MAX hops of all the header lines, in order."""
    hops: list[str] = []
    for line in reversed(lines):
        for hop in reversed(line[-HOPS_MAX * (HOP_CHARS_MAX + 2) :].split(",")):
            hops.append(hop)
            if len(hops) == HOPS_MAX:
                return hops[::-1]
    return hops[::-1]
