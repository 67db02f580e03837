"""Tally's Python client: ``Client`` (synchronous) and ``AsyncClient``, on httpx.

It needs only ``pip install tally`` (or ``tally[client]``), not the server's
dependencies: it shares the server's schemas (``tally.api.schemas``), which
import nothing of the server. docs/client.md has the whole guide:

- every write carries an idempotency key made once per logical call and reused
  by each of its retries, so a retry can never apply a write twice;
- retries with exponential backoff and full jitter, on no answer, 409
  ``idempotency_key_in_use``, 429 and 503, honouring ``Retry-After``, bounded in
  attempts and time (``RetryPolicy``);
- ``iterate`` methods walk every page; errors are typed by the contract's code
  (``tally.client.errors``) and carry the request id;
- ``verify_webhook`` checks a webhook delivery's Standard Webhooks signature and
  returns its event (``tally.webhooks.signing.verify``, docs/webhooks.md).
"""

from tally.client.aio import AsyncClient
from tally.client.calls import Call, new_idempotency_key
from tally.client.errors import ApiError, ConnectionFailed, TallyClientError
from tally.client.retry import NO_RETRY, RetryPolicy
from tally.client.sync import Client
from tally.webhooks import WebhookVerificationError
from tally.webhooks import verify as verify_webhook

__all__ = [
    "NO_RETRY",
    "ApiError",
    "AsyncClient",
    "Call",
    "Client",
    "ConnectionFailed",
    "RetryPolicy",
    "TallyClientError",
    "WebhookVerificationError",
    "new_idempotency_key",
    "verify_webhook",
]
