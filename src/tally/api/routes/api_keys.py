"""The API key routes of api.md §6: create (the secret shown once), list, revoke."""

from __future__ import annotations

from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, RouteTable
from tally.api.responses import json_response
from tally.api.routes.identity import (
    CURSOR,
    LIMIT,
    READ_ERRORS,
    WRITE_ERRORS,
    audit_of,
    cursor,
    no_content,
)
from tally.api.routes.params import ID
from tally.api.schemas.identity import ApiKeyCreate, ApiKeyCreatedOut, ApiKeyList, api_key_out
from tally.identity import ADMIN

routes = RouteTable(tag="API keys")


@routes.route(
    "GET", "/v1/api-keys", "listApiKeys", "List API keys (prefixes only, never secrets)",
    scope=ADMIN, success={200: ApiKeyList}, errors=READ_ERRORS, params=(LIMIT, CURSOR),
)  # fmt: skip
async def list_api_keys(call: Call) -> Response:
    page = await call.services.identity.api_keys(call.principal, call.limit(), cursor(call))
    return list_response(page, api_key_out, ApiKeyList)


@routes.route(
    "POST", "/v1/api-keys", "createApiKey", "Create an API key (the secret is shown once)",
    scope=ADMIN, success={201: ApiKeyCreatedOut}, request=ApiKeyCreate, errors=WRITE_ERRORS,
    idempotency_key=False,
)  # fmt: skip
async def create_api_key(call: Call) -> Response:
    body: ApiKeyCreate = await call.body(ApiKeyCreate)
    created = await call.services.identity.create_api_key(
        call.principal, body.name, list(body.scopes), audit_of(call)
    )
    out = ApiKeyCreatedOut(api_key_out(created.record), created.token)
    return json_response(out, 201, (("location", f"/v1/api-keys/{created.record.id}"),))


@routes.route(
    "DELETE", "/v1/api-keys/{id}", "revokeApiKey", "Revoke an API key, at once",
    scope=ADMIN, success={204: None}, errors=(401, 403, 404, 503), params=(ID,),
    idempotency_key=False,
)  # fmt: skip
async def revoke_api_key(call: Call) -> Response:
    await call.services.identity.revoke_api_key(call.principal, call.path_id(), audit_of(call))
    return no_content()
