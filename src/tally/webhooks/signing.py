"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the sender's
side and the receiver's.

A secret is ``whsec_`` and the base64 of 32 random bytes. Each attempt sends
``webhook-id`` (the delivery's id, the same on every retry), ``webhook-timestamp``
(seconds since the epoch, of this attempt) and ``webhook-signature``: ``v1,`` and
the base64 of HMAC-SHA256(key, ``<id>.<timestamp>.<body>``), one such value per
secret in use, separated by spaces (two during a rotation's overlap).

``verify`` is the receiver's helper: it takes the raw body, the headers and the
secret, checks the timestamp is within ``tolerance_seconds`` of now (a replayed
old request is refused) and that one of the signatures matches, in constant
time, and returns the parsed event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
TOLERANCE_SECONDS = 5 * 60  # the spec's suggestion
SIGNATURES_MAX = 8  # a header with more is refused, not searched


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook from Tally for this secret."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("The secret is not base64 after whsec_.") from None
    if not key:
        raise WebhookVerificationError("The secret is empty.")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 signature>`` of one message with one secret."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets_in_use: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    assert secrets_in_use, "an endpoint always has a secret"
    signatures = " ".join(sign(s, webhook_id, timestamp, body) for s in secrets_in_use)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a delivery as received, and return its event (parsed JSON).

    ``payload`` is the raw body, exactly as it arrived (not re-serialised JSON);
    ``headers`` any mapping of the request's headers (names in any case). Raises
    ``WebhookVerificationError`` when a header is missing, the timestamp is
    outside ``tolerance_seconds`` of ``now`` or no signature matches.
    """
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signature_text = lowered.get("webhook-signature")
    if not (webhook_id and timestamp_text and signature_text):
        raise WebhookVerificationError(
            "Missing webhook-id, webhook-timestamp or webhook-signature."
        )
    if not timestamp_text.isascii() or not timestamp_text.isdigit() or len(timestamp_text) > 12:
        raise WebhookVerificationError("webhook-timestamp is not a number of seconds.")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old or too new.")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    passed = signature_text.split(" ")[:SIGNATURES_MAX]
    if not any(hmac.compare_digest(expected, p.encode()) for p in passed):
        raise WebhookVerificationError("No signature matches this secret.")
    return json.loads(body)
