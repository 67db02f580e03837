"""A browser's side of the console, in-process: a cookie jar per person over the
one running app's TestClient, and the console's forms filled in with their
hidden fields (CSRF token, idempotency key). Used by tests/api/test_console.py
and tests/security."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.testclient import TestClient

PASSWORD = "amber-Lantern-41-quietly-folds"
ORIGIN = "http://testserver"
_HIDDEN = re.compile(r'name="(csrf|login_token|idempotency_key)" value="([^"]*)"')


def hidden(html: str) -> dict[str, str]:
    return dict(_HIDDEN.findall(html))


class Jar:
    """One running app's client, with a cookie jar per person: the jar is put in
    place for each request and taken back after it (the app's services live on
    the client's event loop, so a second TestClient could not reach them)."""

    def __init__(self, client: TestClient) -> None:
        self.base = client
        self.cookies = httpx.Cookies()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.base.cookies = self.cookies
        try:
            return self.base.request(method, path, **kwargs)
        finally:
            self.cookies = httpx.Cookies(self.base.cookies)
            self.base.cookies = httpx.Cookies()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def fresh(client: TestClient) -> Jar:
    return Jar(client)


@dataclass
class Browser:
    """A person in a browser: a cookie jar of their own and the console's forms."""

    client: Jar
    email: str

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, follow_redirects=False, **kwargs)

    def submit(
        self, path: str, form_page: str, data: dict[str, str], *, origin: str | None = ORIGIN
    ) -> httpx.Response:
        """Fill in the form of ``form_page`` (its hidden fields) and send it."""
        page = self.get(form_page)
        assert page.status_code == 200, page.text
        return self.post(path, {**hidden(page.text), **data}, origin=origin)

    def post(
        self, path: str, data: dict[str, str], *, origin: str | None = ORIGIN
    ) -> httpx.Response:
        headers = {"Origin": origin} if origin else {}
        return self.client.post(path, data=data, headers=headers, follow_redirects=False)


def console_login(client: TestClient, email: str, password: str = PASSWORD) -> Browser:
    browser = Browser(fresh(client), email)
    page = browser.get("/console/login")
    assert page.status_code == 200
    r = browser.post("/console/login", {**hidden(page.text), "email": email, "password": password})
    assert r.status_code == 303, r.text
    return browser
