"""The ledger: its use cases (``service``), the commands they take
(``commands``), the batching writer and the one write transaction it runs
(``writer``, ``transaction``), idempotency keys, the public shape of accounts
and transfers (``public``), and the background rounds of expiry and retention.

The service is imported on first use (PEP 562), not with the package: the
Python client reads ``tally.ledger.public`` without the server's dependencies
installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tally.ledger.service import Ledger, WriteContext, Written

__all__ = ["Ledger", "WriteContext", "Written"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tally.ledger import service

        return getattr(service, name)
    raise AttributeError(f"module 'tally.ledger' has no attribute {name!r}")
