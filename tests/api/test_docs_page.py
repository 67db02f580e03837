"""The API reference at ``/docs``: served by Tally alone, offline, under a CSP that
allows nothing but Tally itself.

No browser is installed on the test machines, so the page is checked the way a
browser would load it: every asset it references (stylesheets, scripts, images,
frames, fonts and ``url()``s inside the CSS) is fetched from the app, each must be
same-origin and allowed by the page's CSP, and the page must hold nothing that such
a CSP blocks (inline scripts, ``<style>`` elements, ``style=`` attributes, event
handlers, ``javascript:`` links), so that a browser would show it whole, with no
console error.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tally.api.openapi import build_openapi

# The directive a browser checks each kind of asset against.
DIRECTIVE_OF = {
    ("link", "stylesheet"): "style-src",
    ("script", ""): "script-src",
    ("img", ""): "img-src",
    ("iframe", ""): "frame-src",
    ("link", "icon"): "img-src",
}
ASSET_ATTRIBUTES = {"src", "href", "srcset", "data", "poster", "action", "formaction"}


class Page(HTMLParser):
    """Everything on a page that makes a browser fetch or run something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.assets: list[tuple[str, str, str]] = []  # (tag, rel, url)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.inline: list[str] = []  # what a 'self'-only CSP would block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "style" or "style" in values:
            self.inline.append(f"<{tag}> style")
        if tag == "script" and "src" not in values:
            self.inline.append("inline <script>")
        self.inline += [f"<{tag} {name}>" for name in values if name.startswith("on")]
        for name, value in values.items():
            if value.strip().lower().startswith(("javascript:", "data:", "blob:")):
                self.inline.append(f"<{tag} {name}={value[:20]}>")
        if tag == "a":
            self.links.append(values.get("href", ""))
            return
        for name in ASSET_ATTRIBUTES & set(values):
            self.assets.append((tag, values.get("rel", ""), values[name]))


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def directives(csp: str) -> dict[str, list[str]]:
    parsed = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


def allows_self(policy: dict[str, list[str]], directive: str) -> bool:
    sources = policy.get(directive, policy.get("default-src", []))
    return "'self'" in sources


@pytest.fixture(scope="module")
def page(client: TestClient) -> Any:
    r = client.get("/docs")
    assert r.status_code == 200, r.text
    return r


def test_the_csp_of_the_page_allows_nothing_but_tally_itself(page: Any) -> None:
    policy = directives(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for directive, sources in policy.items():
        assert set(sources) <= {"'self'", "'none'"}, (directive, sources)


def test_the_page_and_every_asset_it_references_are_served_by_tally(
    client: TestClient, page: Any
) -> None:
    assert page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    found = parse(page.text)
    assert found.assets, "the page references its stylesheet"
    for tag, rel, url in found.assets:
        parts = urlsplit(url)
        # Same origin: a path on this server, never another host or scheme.
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        directive = DIRECTIVE_OF[(tag, rel)]
        assert allows_self(policy, directive), (url, directive, policy)
        asset = client.get(url)
        assert asset.status_code == 200, url
        if directive == "style-src":
            assert asset.headers["content-type"].startswith("text/css"), url
            # A stylesheet's own url()s and @imports would be fetched too: none may
            # leave the origin, and each must be served.
            for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text):
                assert ref.startswith("/") and not ref.startswith("//"), ref
                assert client.get(ref).status_code == 200, ref
            assert "@import" not in asset.text


def test_the_page_holds_nothing_its_csp_would_block(page: Any) -> None:
    assert parse(page.text).inline == []


def test_every_link_on_the_page_leads_to_an_anchor_on_it_or_to_tally(
    client: TestClient, page: Any
) -> None:
    found = parse(page.text)
    for href in found.links:
        if href.startswith("#"):
            assert href[1:] in found.ids, href
        else:
            assert href.startswith("/") and not href.startswith("//"), href
            assert client.get(href).status_code == 200, href


def test_the_page_documents_every_operation_and_schema(page: Any) -> None:
    document = build_openapi()
    ids = parse(page.text).ids
    for item in document["paths"].values():
        for operation in item.values():
            assert f"op-{operation['operationId']}" in ids, operation["operationId"]
    for name in document["components"]["schemas"]:
        assert f"schema-{name}" in ids, name


def test_the_page_shows_the_rules_of_a_field(page: Any) -> None:
    # The reference is for people: a transfer's amount says its bounds and its unit.
    text = page.text
    transfer = text[text.index('id="schema-TransferCreate"') :]
    amount = transfer[transfer.index("<code>amount</code>") :].split("</tr>", 1)[0]
    assert "≥ 1" in amount and "≤ 9223372036854775807" in amount and "Minor units" in amount
