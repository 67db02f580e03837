"""``/graphql``'s path and request body (GraphQL over HTTP): what the route, the
handler and the OpenAPI document share, without GraphQL itself."""

from __future__ import annotations

from typing import Any

import msgspec

PATH = "/graphql"


class GraphQLRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A GraphQL-over-HTTP request body: one operation."""

    query: str
    variables: dict[str, Any] | None = None
    operationName: str | None = None
    extensions: dict[str, Any] | None = None
