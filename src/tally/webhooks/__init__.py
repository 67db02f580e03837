"""Webhooks: endpoints a tenant registers, and the signed deliveries of its
events to them (docs/webhooks.md).

- ``service``: the endpoints API's use cases (create, update, rotate, delete,
  deliveries, replay), each write audited in its transaction;
- ``dispatcher``: the delivery loop of one server process, over ``queue`` (the
  delivery rows, their leases and the workers' heartbeats, in the database),
  ``ring`` (rendezvous hashing of endpoints over live workers), ``delivery``
  (one HTTP attempt), ``addresses`` (SSRF checks) and ``schedule`` (backoff);
- ``signing``: Standard Webhooks signatures, and ``verify``, the receiver's helper.
"""

from tally.webhooks.signing import WebhookVerificationError, sign, verify

__all__ = ["WebhookVerificationError", "sign", "verify"]
