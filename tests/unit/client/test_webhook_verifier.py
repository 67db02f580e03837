"""The client's webhook verifier takes what the Standard Webhooks reference
package signs, and refuses a body changed in transit."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from tally.client import WebhookVerificationError, verify_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"sequence":3,"type":"transfer.created","created_at":"x","data":{"id":"t1"}}'


def headers(body: bytes) -> dict[str, str]:
    now = int(time.time())
    signature = Webhook(SECRET).sign("msg_9", datetime.fromtimestamp(now, UTC), body)
    return {"webhook-id": "msg_9", "webhook-timestamp": str(now), "webhook-signature": signature}


def test_a_signed_delivery_verifies_and_yields_its_event() -> None:
    assert verify_webhook(BODY, headers(BODY), SECRET)["data"] == {"id": "t1"}


def test_a_body_changed_in_transit_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY.replace(b"t1", b"t2"), headers(BODY), SECRET)
