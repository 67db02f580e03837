"""Which live worker delivers which endpoint: rendezvous (highest random
weight) hashing.

Every worker scores every endpoint with ``sha256(worker id, endpoint id)``; the
endpoint belongs to the worker with the highest score. Every process computes
the same answer from the same list of live workers, with no coordination.
When a worker joins, it takes exactly the endpoints it now scores highest on,
about 1/n of them, each from whichever worker had it; when one leaves, only its
endpoints move, each to its second-best worker. No other endpoint moves, so an
endpoint's deliveries stay with one worker in turn, which keeps them in order.
(A ring of virtual nodes gives the same property with a table to keep; with
the tens of workers Tally runs, scoring each is cheaper than keeping one.)

Views can differ for a moment (a heartbeat not yet seen): then two workers may
both take an endpoint, and the lease on its head delivery (in the database)
lets only one attempt it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def score(worker_id: str, endpoint_id: str) -> int:
    digest = hashlib.sha256(f"{worker_id}\x00{endpoint_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(endpoint_id: str, workers: Sequence[str]) -> str:
    """The worker that delivers ``endpoint_id`` (ties, which never happen in
    practice, go to the smaller id)."""
    assert workers, "at least the asking worker is live"
    return max(workers, key=lambda w: (score(w, endpoint_id), w))


def share(endpoint_ids: Iterable[str], workers: Sequence[str], me: str) -> list[str]:
    """The endpoints ``me`` delivers."""
    return [e for e in endpoint_ids if owner(e, workers) == me]
