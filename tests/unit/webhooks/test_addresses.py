"""SSRF: which URLs and addresses a webhook may be sent to."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tally.errors import UrlNotAllowed
from tally.webhooks.addresses import check, parse, refusal

REFUSED = {
    "127.0.0.1": "a loopback address",
    "127.8.9.10": "a loopback address",
    "::1": "a loopback address",
    "::ffff:127.0.0.1": "a loopback address",
    "10.1.2.3": "a private address",
    "172.16.0.1": "a private address",
    "192.168.1.1": "a private address",
    "fd12::1": "a private address",
    "169.254.169.254": "a cloud metadata address",
    "fd00:ec2::254": "a cloud metadata address",
    "100.100.100.200": "a cloud metadata address",
    "169.254.1.1": "a link-local address",
    "fe80::1": "a link-local address",
    "224.0.0.1": "a multicast address",
    "ff02::1": "a multicast address",
    "0.0.0.0": "an unspecified address",
    "::": "an unspecified address",
    "100.64.0.1": "an address that is not public",
    "192.0.2.1": "a private address",
    "240.0.0.1": "a private address",
}


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_loopback=False) == REFUSED[address]


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_loopback=False) is None


def test_the_development_setting_allows_loopback_and_nothing_else() -> None:
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert refusal(ipaddress.ip_address("::1"), allow_loopback=True) is None
    for address in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0"):
        assert refusal(ipaddress.ip_address(address), allow_loopback=True) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://1.1.1.1/hook",  # https only without the development setting
        "ftp://1.1.1.1/hook",
        "https://user:pw@1.1.1.1/hook",
        "https:///hook",
        "https://1.1.1.1/hook#frag",
        "https://1.1.1.1:99999/hook",
        "https://1.1.1.1:0/hook",
        "https://1.1.1.1/ho ok",
        "https://[::1/",
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        parse(url, allow_loopback=False)


def test_a_hostname_that_resolves_to_loopback_is_refused() -> None:
    with pytest.raises(UrlNotAllowed, match="loopback"):
        asyncio.run(check("https://localhost/hook", allow_loopback=False))
    target, found = asyncio.run(check("http://localhost:8080/h?x=1", allow_loopback=True))
    assert (target.host, target.port, target.path) == ("localhost", 8080, "/h?x=1")
    assert all(a.is_loopback for a in found)


def test_a_public_literal_is_allowed_without_any_lookup() -> None:
    target, found = asyncio.run(check("https://1.1.1.1/hook", allow_loopback=False))
    assert found == [ipaddress.ip_address("1.1.1.1")]
    assert target.port == 443


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UrlNotAllowed, match="does not resolve"):
        asyncio.run(check("https://no-such-host.invalid/hook", allow_loopback=False))
