"""A GraphQL client over the in-process app, for the tests of /graphql."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Api


class GraphQL:
    def __init__(self, api: Api) -> None:
        self.api = api

    def raw(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        extra = dict(headers or {})
        if key is not None:
            extra["Idempotency-Key"] = key
        return self.api.post("/graphql", body, headers=extra)

    def __call__(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The response's JSON, asserting a 200 (errors may be in it)."""
        r = self.raw(query, variables, **kw)
        assert r.status_code == 200, r.text
        return r.json()

    def data(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The ``data`` of a request that must succeed."""
        out = self(query, variables, **kw)
        assert "errors" not in out, out
        return out["data"]

    def error(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The one error of a request that must fail."""
        out = self(query, variables, **kw)
        assert out.get("errors"), out
        (error,) = out["errors"]
        assert error["extensions"]["code"], error
        assert "Traceback" not in error["message"]
        return error


def code(error: dict[str, Any]) -> str:
    return str(error["extensions"]["code"])
