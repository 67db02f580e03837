"""The webhook endpoint routes of api.md §8: an admin's, like API keys.

No Idempotency-Key: create and rotate-secret answer with a secret, which is
never stored in a response (as for API keys); the other writes are idempotent
in their own way (an update sets fields, a replay makes a delivery due again).
"""

from __future__ import annotations

from starlette.responses import Response

from tally.api.answers import list_response
from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import query_text
from tally.api.responses import json_response
from tally.api.routes.identity import CURSOR, LIMIT, READ_ERRORS, WRITE_ERRORS, audit_of, cursor
from tally.api.routes.params import ID
from tally.api.schemas.webhooks import (
    SecretRotation,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointCreatedOut,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
    delivery_out,
    endpoint_out,
)
from tally.errors import FieldError, ValidationFailed
from tally.identity import ADMIN
from tally.webhooks.service import DELIVERY_STATUSES, EndpointChanges

routes = RouteTable(tag="Webhooks")
ONE_ERRORS = (401, 403, 404, 422, 503)
DELIVERY_ID = Param("delivery_id", "path", {"type": "string", "maxLength": 64}, required=True)
STATUS = Param(
    "status",
    "query",
    {"type": "string", "enum": list(DELIVERY_STATUSES)},
    "Only deliveries in this state (failed: the dead letters).",
)


@routes.route(
    "GET", "/v1/webhook-endpoints", "listWebhookEndpoints", "List webhook endpoints",
    scope=ADMIN, success={200: WebhookEndpointList}, errors=READ_ERRORS, params=(LIMIT, CURSOR),
)  # fmt: skip
async def list_endpoints(call: Call) -> Response:
    page = await call.services.webhooks.endpoints(call.tenant_id, call.limit(), cursor(call))
    return list_response(page, endpoint_out, WebhookEndpointList)


@routes.route(
    "POST", "/v1/webhook-endpoints", "createWebhookEndpoint",
    "Create a webhook endpoint (its signing secret is shown once)",
    scope=ADMIN, success={201: WebhookEndpointCreatedOut}, request=WebhookEndpointCreate,
    errors=(*WRITE_ERRORS, 409), idempotency_key=False,
)  # fmt: skip
async def create_endpoint(call: Call) -> Response:
    body: WebhookEndpointCreate = await call.body(WebhookEndpointCreate)
    created = await call.services.webhooks.create(
        call.tenant_id, body.url, list(body.event_types), body.description, audit_of(call)
    )
    out = WebhookEndpointCreatedOut(endpoint_out(created.record), created.secret)
    location = f"/v1/webhook-endpoints/{created.record.id}"
    return json_response(out, 201, (("location", location),))


@routes.route(
    "GET", "/v1/webhook-endpoints/{id}", "getWebhookEndpoint", "Get a webhook endpoint",
    scope=ADMIN, success={200: WebhookEndpointOut}, errors=ONE_ERRORS, params=(ID,),
)  # fmt: skip
async def get_endpoint(call: Call) -> Response:
    found = await call.services.webhooks.endpoint(call.tenant_id, call.path_id())
    return json_response(endpoint_out(found))


@routes.route(
    "PATCH", "/v1/webhook-endpoints/{id}", "updateWebhookEndpoint",
    "Update a webhook endpoint: its URL, event types, description; enable or disable it",
    scope=ADMIN, success={200: WebhookEndpointOut}, request=WebhookEndpointUpdate,
    errors=(*WRITE_ERRORS, 404), params=(ID,), idempotency_key=False,
)  # fmt: skip
async def update_endpoint(call: Call) -> Response:
    body: WebhookEndpointUpdate = await call.body(WebhookEndpointUpdate)
    changes = EndpointChanges(
        body.url,
        None if body.event_types is None else list(body.event_types),
        body.description,
        body.status,
    )
    updated = await call.services.webhooks.update(
        call.tenant_id, call.path_id(), changes, audit_of(call)
    )
    return json_response(endpoint_out(updated))


@routes.route(
    "DELETE", "/v1/webhook-endpoints/{id}", "deleteWebhookEndpoint",
    "Delete a webhook endpoint and its deliveries; nothing more is sent to it",
    scope=ADMIN, success={204: None}, errors=(401, 403, 404, 503), params=(ID,),
    idempotency_key=False,
)  # fmt: skip
async def delete_endpoint(call: Call) -> Response:
    await call.services.webhooks.delete(call.tenant_id, call.path_id(), audit_of(call))
    return Response(status_code=204)


@routes.route(
    "POST", "/v1/webhook-endpoints/{id}/rotate-secret", "rotateWebhookEndpointSecret",
    "Rotate the signing secret; the old one keeps signing beside it for the overlap",
    scope=ADMIN, success={200: WebhookEndpointCreatedOut}, request=SecretRotation,
    errors=(*WRITE_ERRORS, 404), params=(ID,), idempotency_key=False,
)  # fmt: skip
async def rotate_secret(call: Call) -> Response:
    body: SecretRotation = await call.body(SecretRotation, empty_ok=True)
    rotated = await call.services.webhooks.rotate_secret(
        call.tenant_id, call.path_id(), body.overlap_seconds, audit_of(call)
    )
    return json_response(WebhookEndpointCreatedOut(endpoint_out(rotated.record), rotated.secret))


@routes.route(
    "GET", "/v1/webhook-endpoints/{id}/deliveries", "listWebhookDeliveries",
    "List an endpoint's deliveries, newest first: status, attempts, last error, next attempt",
    scope=ADMIN, success={200: WebhookDeliveryList}, errors=ONE_ERRORS,
    params=(ID, LIMIT, CURSOR, STATUS),
)  # fmt: skip
async def list_deliveries(call: Call) -> Response:
    endpoint_id = call.path_id()
    status = query_text(call.request, "status", 16)
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(
            [FieldError("status", "invalid", f"One of {', '.join(DELIVERY_STATUSES)}.")]
        )
    page = await call.services.webhooks.deliveries(
        call.tenant_id, endpoint_id, limit=call.limit(), cursor=cursor(call), status=status
    )
    return list_response(page, delivery_out, WebhookDeliveryList)


@routes.route(
    "POST", "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/replay",
    "replayWebhookDelivery",
    "Send a delivery again (a dead-lettered one, say), under the same webhook-id",
    scope=ADMIN, success={202: WebhookDeliveryOut}, errors=(401, 403, 404, 503),
    params=(ID, DELIVERY_ID), idempotency_key=False,
)  # fmt: skip
async def replay_delivery(call: Call) -> Response:
    replayed = await call.services.webhooks.replay(
        call.tenant_id, call.path_id(), call.path_id("delivery_id"), audit_of(call)
    )
    return json_response(delivery_out(replayed), 202)
