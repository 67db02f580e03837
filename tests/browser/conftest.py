"""Browser tests: the console in a real headless Chromium (Debian's ``chromium``,
driven by Playwright; never a browser Playwright downloads), against a real
``tally serve``. One browser per module, one server per module.

Without Chromium (or Playwright) the tests skip on a developer's machine and
fail in CI (``CI=true``), where .ci/run installs Chromium: a console that CI
never opened in a browser must not pass as tested.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, tally_server

CHROMIUM = os.environ.get("TALLY_TEST_CHROMIUM", "/usr/bin/chromium")
# As root, in a container, on a machine with no network but loopback: no sandbox
# (root), no GPU, and none of Chromium's own calls home (refused here, and slow).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "amber-Lantern-41-quietly-folds"
TIMEOUT_MS = 15_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"The console's browser tests cannot run: {reason}. CI installs Debian's "
            "chromium (.ci/run) and playwright (the dev extra); see docs/console.md.",
            pytrace=False,
        )
    pytest.skip(f"no browser for the console tests: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: the test run's temporary directory, or
    TALLY_TEST_ARTIFACTS (test-artifacts/ in the work tree is ignored by git)."""
    chosen = os.environ.get("TALLY_TEST_ARTIFACTS")
    path = Path(chosen) / "console" if chosen else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("console-server")
    with tally_server(f"sqlite:///{directory}/tally.db", directory / "serve.log") as server:
        yield server


def sign_up(base_url: str) -> tuple[str, dict[str, str]]:
    """A new tenant's owner: their email, and REST headers to check what the
    console did through the API."""
    email = f"browser-{secrets.token_hex(5)}@example.com"
    with httpx.Client(base_url=base_url, timeout=10) as api:
        r = api.post(
            "/v1/signup", json={"email": email, "password": PASSWORD, "tenant_name": "browser"}
        )
        assert r.status_code == 201, r.text
        r = api.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return email, {"Authorization": f"Bearer {r.json()['access_token']}"}
