"""The GraphiQL page at ``/graphiql``: served by Tally alone (no CDN), under a CSP
as strict as ``/docs``'s but for what GraphiQL needs to run: scripts from this
origin, and fonts and icons embedded in its stylesheet as ``data:`` URLs.

As for ``/docs`` (tests/api/test_docs_page.py), no browser is installed, so the
page is checked the way a browser loads it: every asset it references is fetched
from the app and must be same-origin and allowed by the CSP, and the page holds
nothing such a CSP blocks (no inline script or style)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tests.api.test_docs_page import DIRECTIVE_OF, allows_self, directives, parse

STATIC = Path(__file__).resolve().parents[2] / "src" / "tally" / "api" / "graphql" / "static"


@pytest.fixture(scope="module")
def page(client: TestClient) -> Any:
    r = client.get("/graphiql")
    assert r.status_code == 200, r.text
    return r


def test_the_csp_allows_this_origin_and_embedded_fonts_and_images_only(page: Any) -> None:
    policy = directives(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    for directive, sources in policy.items():
        allowed = {"'self'", "'none'"} | (
            {"data:"} if directive in ("font-src", "img-src") else set()
        )
        assert set(sources) <= allowed, (directive, sources)
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources


def test_the_page_and_every_asset_it_references_are_served_by_tally(
    client: TestClient, page: Any
) -> None:
    assert page.headers["content-type"].startswith("text/html")
    policy = directives(page.headers["content-security-policy"])
    found = parse(page.text)
    kinds = {(tag, rel) for tag, rel, _ in found.assets}
    assert kinds == {("link", "stylesheet"), ("script", "")}, kinds
    for tag, rel, url in found.assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/graphiql/"), url
        directive = DIRECTIVE_OF[(tag, rel)]
        assert allows_self(policy, directive), (url, directive)
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        expected = "text/css" if directive == "style-src" else "text/javascript"
        assert asset.headers["content-type"].startswith(expected), url
        if directive == "style-src":
            for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text):
                # Embedded (the CSP allows data: for fonts and images), or ours.
                assert ref.startswith(("data:font/", "data:image/", "/")), ref[:40]
                assert not ref.startswith("//"), ref
            assert "@import" not in asset.text


def test_the_page_holds_nothing_its_csp_would_block(page: Any) -> None:
    assert parse(page.text).inline == []
    assert "http://" not in page.text and "https://" not in page.text


def test_graphiql_starts_against_this_servers_graphql(client: TestClient) -> None:
    init = client.get("/graphiql/init.js").text
    assert 'url: "/graphql"' in init
    assert "createRoot" in init


def test_the_vendored_files_are_recorded_with_their_versions_and_licences() -> None:
    readme = (STATIC / "README.md").read_text()
    for name in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js"):
        assert f"`{name}`" in readme
        assert (STATIC / name).stat().st_size > 1000
    for package in ("graphiql", "react", "react-dom"):
        assert "MIT" in (STATIC / f"LICENSE.{package}").read_text()
    assert "3.8.3" in readme and "18.3.1" in readme
