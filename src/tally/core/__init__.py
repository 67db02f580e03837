"""The ledger core: pure Python, no I/O, no clock, no database.

Everything a ledger rule needs is here; storage, HTTP and the CLI are adapters
around it (see docs/architecture.md).
"""

from tally.core.codes import Code
from tally.core.commands import (
    Command,
    CreateAccount,
    CreateTransfer,
    ExpirePending,
    PostPending,
    UpdateAccount,
    VoidPending,
)
from tally.core.engine import Book, Changes, Outcome, Status
from tally.core.model import (
    AMOUNT_MAX,
    Account,
    AccountStatus,
    Balance,
    BalanceChange,
    Event,
    NormalBalance,
    Transfer,
    TransferStatus,
    derive_balance,
)

__all__ = [
    "AMOUNT_MAX",
    "Account",
    "AccountStatus",
    "Balance",
    "BalanceChange",
    "Book",
    "Changes",
    "Code",
    "Command",
    "CreateAccount",
    "CreateTransfer",
    "Event",
    "ExpirePending",
    "NormalBalance",
    "Outcome",
    "PostPending",
    "Status",
    "Transfer",
    "TransferStatus",
    "UpdateAccount",
    "VoidPending",
    "derive_balance",
]
