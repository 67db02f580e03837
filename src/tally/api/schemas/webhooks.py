"""Request and response schemas of the webhook endpoint routes (api.md §8).

As everywhere: one Struct per direction, unknown request fields refused (422),
and the endpoint's secret shown only by the responses that create it (create,
rotate-secret), never by a read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from tally.api.schemas.common import NO_NUL, RequestBody, Timestamp, pattern
from tally.support.clock import format_time
from tally.webhooks.addresses import URL_CHARS_MAX
from tally.webhooks.repository import DeliveryRecord, EndpointRecord
from tally.webhooks.service import DESCRIPTION_CHARS_MAX, EVENT_TYPES

URL_PATTERN = pattern(
    "^https?://[^\u0000- \u007f]+(?![\\s\\S])",
    "Must be an http or https URL, with no space or control character.",
)
Url = Annotated[
    str,
    Meta(
        min_length=10,
        max_length=URL_CHARS_MAX,
        pattern=URL_PATTERN,
        description="Where deliveries are POSTed: https, on a host that resolves to public "
        "addresses only (else 422 url_not_allowed).",
        extra_json_schema={"format": "uri"},
        examples=["https://example.com/webhooks/tally"],
    ),
]
EventTypeName = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EventTypes = Annotated[
    list[EventTypeName],
    Meta(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description='The event types delivered; "*" for all of them.',
        extra_json_schema={"uniqueItems": True},
    ),
]
Description = Annotated[str, Meta(max_length=DESCRIPTION_CHARS_MAX, pattern=NO_NUL)]
OverlapSeconds = Annotated[int, Meta(ge=0, le=7 * 86_400)]


class WebhookEndpointCreate(RequestBody):
    url: Url
    event_types: EventTypes
    description: Description = ""


class WebhookEndpointUpdate(RequestBody):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    status: Literal["enabled", "disabled"] | None = None


class SecretRotation(RequestBody):
    overlap_seconds: (
        Annotated[
            OverlapSeconds,
            Meta(
                description="How long the previous secret keeps signing beside the new "
                "one (default TALLY_WEBHOOKS_SECRET_OVERLAP_SECONDS); 0 retires it at once."
            ),
        ]
        | None
    ) = None


class WebhookEndpointOut(Struct):
    object: Literal["webhook_endpoint"]
    id: str
    url: str
    description: str
    event_types: list[str]
    status: Literal["enabled", "disabled"]
    # "user": disabled through the API; "gone": the receiver answered 410.
    disabled_reason: Literal["user", "gone"] | None
    created_at: Timestamp
    updated_at: Timestamp
    previous_secret_expires_at: Timestamp | None


class WebhookEndpointCreatedOut(Struct):
    webhook_endpoint: WebhookEndpointOut
    secret: str  # whsec_...: shown by create and rotate-secret only


class WebhookEndpointList(Struct):
    data: list[WebhookEndpointOut]
    has_more: bool
    next_cursor: str | None


class WebhookDeliveryOut(Struct):
    object: Literal["webhook_delivery"]
    id: str  # the webhook-id header of every attempt
    endpoint_id: str
    event_sequence: int
    event_type: str
    # pending: will be attempted at next_attempt_at; failed: dead-lettered.
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: Timestamp | None
    last_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    completed_at: Timestamp | None


class WebhookDeliveryList(Struct):
    data: list[WebhookDeliveryOut]
    has_more: bool
    next_cursor: str | None


def _time(us: int | None) -> str | None:
    return None if us is None else format_time(us)


def endpoint_out(e: EndpointRecord) -> WebhookEndpointOut:
    return WebhookEndpointOut(
        "webhook_endpoint",
        e.id,
        e.url,
        e.description,
        e.event_types.split(),
        e.status,  # type: ignore[arg-type]
        e.disabled_reason,  # type: ignore[arg-type]
        format_time(e.created_at_us),
        format_time(e.updated_at_us),
        _time(e.previous_secret_expires_at_us),
    )


def delivery_out(d: DeliveryRecord) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        "webhook_delivery",
        d.id,
        d.endpoint_id,
        d.event_sequence,
        d.event_type,
        d.status,  # type: ignore[arg-type]
        d.attempts,
        _time(d.next_attempt_at_us) if d.status == "pending" else None,
        _time(d.last_attempt_at_us),
        d.last_status_code,
        d.last_error,
        format_time(d.created_at_us),
        _time(d.completed_at_us),
    )
