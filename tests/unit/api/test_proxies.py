"""Which address is the client's behind proxies (api/proxies.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.types import Scope

from tally.api.proxies import HOPS_MAX, TrustedProxies, parse_hop, parse_networks
from tally.config import Settings

PROXIES = TrustedProxies(parse_networks(["10.0.0.0/8", "fd00::/8", "127.0.0.1"]))


def scope(peer: str, *headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "client": (peer, 4000), "headers": list(headers), "scheme": "http"}


def test_an_untrusted_peer_is_the_client_whatever_its_header_says() -> None:
    assert PROXIES.client("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"


def test_a_trusted_proxy_names_the_client_it_forwarded_for() -> None:
    assert PROXIES.client("10.0.0.2", ["198.51.100.7"]) == "198.51.100.7"


def test_the_rightmost_untrusted_hop_wins_over_what_the_client_wrote_before_it() -> None:
    # The client sent "1.1.1.1" itself; its real address was appended by the proxy.
    assert PROXIES.client("10.0.0.2", ["1.1.1.1, 198.51.100.7"]) == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_through() -> None:
    hops = ["6.6.6.6, 198.51.100.7, 10.1.1.1", "10.2.2.2"]  # two lines, joined in order
    assert PROXIES.client("127.0.0.1", hops) == "198.51.100.7"


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    assert PROXIES.client("10.0.0.2", ["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"


@pytest.mark.parametrize("junk", ["unknown", "", "evil.example", "1.2.3.4.5", "x" * 500])
def test_a_hop_that_is_not_an_address_stops_the_walk_at_the_last_vouched_hop(junk: str) -> None:
    assert PROXIES.client("10.0.0.2", [f"{junk}, 10.1.1.1"]) == "10.1.1.1"
    assert PROXIES.client("10.0.0.2", [junk]) == "10.0.0.2"


@pytest.mark.parametrize(
    ("hop", "address"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7:5123 ", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_hops_are_read_with_ports_brackets_and_mapped_addresses(hop: str, address: str) -> None:
    parsed = parse_hop(hop)
    assert parsed is not None
    assert str(parsed) == address


def test_an_ipv6_proxy_network_is_trusted() -> None:
    assert PROXIES.client("fd00::5", ["2001:db8::9"]) == "2001:db8::9"


def test_a_huge_header_is_read_only_as_far_as_its_rightmost_hops() -> None:
    hops = ", ".join(["10.0.0.1"] * 10_000 + ["198.51.100.7", "10.0.0.3"])
    assert PROXIES.client("10.0.0.2", [hops]) == "198.51.100.7"
    many_trusted = ", ".join(["198.51.100.8"] + ["10.0.0.1"] * (HOPS_MAX * 3))
    # Past the bound nobody vouches: the leftmost hop read is a trusted proxy's.
    assert PROXIES.client("10.0.0.2", [many_trusted]) == "10.0.0.1"


def test_rewrite_puts_the_client_and_scheme_in_the_scope() -> None:
    s = scope("10.0.0.2", (b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"https"))
    PROXIES.rewrite(s)
    assert s["client"][0] == "198.51.100.7"
    assert s["scheme"] == "https"


def test_rewrite_leaves_an_untrusted_peers_scope_alone() -> None:
    s = scope("203.0.113.5", (b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-proto", b"https"))
    PROXIES.rewrite(s)
    assert s["client"] == ("203.0.113.5", 4000)
    assert s["scheme"] == "http"


def test_rewrite_ignores_a_scheme_that_is_neither_http_nor_https() -> None:
    s = scope("10.0.0.2", (b"x-forwarded-proto", b"gopher"))
    PROXIES.rewrite(s)
    assert s["scheme"] == "http"


def test_no_trusted_proxies_means_none_is_trusted() -> None:
    nobody = TrustedProxies(())
    assert not nobody
    assert nobody.client("10.0.0.2", ["198.51.100.7"]) == "10.0.0.2"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8/8"])
def test_a_bad_network_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_networks([bad])


def test_the_setting_takes_a_comma_separated_list_or_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TALLY_TRUSTED_PROXIES", " 10.0.0.0/8 , 127.0.0.1,")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    monkeypatch.setenv("TALLY_TRUSTED_PROXIES", '["fd00::/8"]')
    assert Settings().trusted_proxies == ["fd00::/8"]
    monkeypatch.delenv("TALLY_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == []


def test_the_setting_refuses_a_bad_network_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.0/99")
    with pytest.raises(ValidationError, match=r"10\.0\.0\.0/99"):
        Settings()
