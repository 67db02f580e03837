"""The audit log: every mutating request, who made it, on what, from where, with what
outcome; append-only and hash-chained.

Where a row is written:

- A request that changes something records its row **in the same transaction**
  as the change (the ledger writer's batch, or an identity transaction), so the
  log never misses a committed change, and never shows one that rolled back.
- A request that changes nothing (refused: 401, 403, 404, 422, 429; replayed
  from an idempotency key) is recorded by the ``Appender``, which batches such
  rows and commits them within ``audit_flush_seconds``. A crash can lose the
  last few of those; never the record of a change.

Rows are inserted unsealed, and never updated. The sealer (one round at a time
across all processes: it locks the one ``audit_chain`` row) gives each the next
number of the chain and ``chain_hash = sha256(previous hash, the row's fields)``
as a row of ``audit_seals``, and moves the head (tally.audit.chain.seal says in
which order, and why no row can commit before one already sealed). ``verify``
walks the chain: an edited row no longer matches its hash, a deleted row leaves
a gap in the numbers, and deleting the newest rows leaves the head pointing
past the end. (Someone who can rewrite the whole table and the
head can forge a consistent chain; keeping a copy of ``tally audit head``
elsewhere is what detects that.)
"""

from tally.audit.appender import Appender
from tally.audit.chain import ChainHead, Verdict
from tally.audit.context import AuditContext, record
from tally.audit.log import AuditLog, AuditRecord

__all__ = [
    "Appender",
    "AuditContext",
    "AuditLog",
    "AuditRecord",
    "ChainHead",
    "Verdict",
    "record",
]
