"""Signatures are the Standard Webhooks ones: checked against its reference
package (standardwebhooks), both ways."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tally import webhooks
from tally.webhooks.signing import new_secret, sign, signed_headers, verify

BODY = b'{"sequence":7,"type":"transfer.created","created_at":"x","data":{"amount":100}}'


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret) == len("whsec_") + 44
    assert new_secret() != secret


def test_our_signature_verifies_with_the_reference_package() -> None:
    secret, now = new_secret(), int(time.time())
    headers = signed_headers([secret], "msg_abc", now, BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {
        "sequence": 7,
        "type": "transfer.created",
        "created_at": "x",
        "data": {"amount": 100},
    }


def test_the_reference_packages_signature_equals_ours() -> None:
    secret, now = new_secret(), int(time.time())
    theirs = Webhook(secret).sign("msg_abc", datetime.fromtimestamp(now, UTC), BODY)
    assert sign(secret, "msg_abc", now, BODY) == theirs


def test_during_an_overlap_both_secrets_sign_and_either_verifies() -> None:
    old, new, now = new_secret(), new_secret(), int(time.time())
    headers = signed_headers([new, old], "msg_abc", now, BODY)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
        verify(BODY, headers, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_verify_accepts_what_the_reference_package_signs() -> None:
    secret, now = new_secret(), int(time.time())
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), BODY)
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(now), "Webhook-Signature": signature}
    assert webhooks.verify(BODY, headers, secret)["sequence"] == 7
    assert webhooks.verify(BODY.decode(), headers, secret)["sequence"] == 7


@pytest.mark.parametrize(
    "tamper",
    ["body", "id", "timestamp", "secret", "old", "future", "missing", "garbage_timestamp"],
)
def test_verify_refuses_anything_tampered_stale_or_missing(tamper: str) -> None:
    secret, now = new_secret(), int(time.time())
    body, headers = BODY, signed_headers([secret], "msg_1", now, BODY)
    if tamper == "body":
        body = BODY.replace(b"100", b"900")
    elif tamper == "id":
        headers["webhook-id"] = "msg_2"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(now + 1)
    elif tamper == "secret":
        secret = new_secret()
    elif tamper in ("old", "future"):
        at = now - 600 if tamper == "old" else now + 600
        headers = signed_headers([secret], "msg_1", at, BODY)
    elif tamper == "missing":
        del headers["webhook-signature"]
    else:
        headers["webhook-timestamp"] = "soon"
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(body, headers, secret)
