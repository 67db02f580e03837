"""The ledger: its use cases (``service``), the commands they take
(``commands``), the batching writer and the one write transaction it runs
(``writer``, ``transaction``), idempotency keys, the public shape of accounts
and transfers (``public``), and the background rounds of expiry and retention.
"""

from tally.ledger.service import Ledger, WriteContext, Written

__all__ = ["Ledger", "WriteContext", "Written"]
