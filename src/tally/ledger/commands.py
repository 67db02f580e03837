"""Commands for the ledger, built from plain values: the one place where an object
without a client-supplied id gets one.

Every entry point (REST, and later gRPC, GraphQL, the CLI) builds its commands
here and hands them to ``Ledger``. A server id is time-sortable with a type
prefix (``acc_…``, ``trf_…``); a client's id is an idempotency key of its own
(api.md §3), so it is kept as given.
"""

from __future__ import annotations

from tally.core import CreateAccount, CreateTransfer, NormalBalance, PostPending, VoidPending
from tally.support.ids import new_id


def create_account(
    *,
    currency: str,
    id: str | None = None,
    normal_balance: str = "credit",
    debits_must_not_exceed_credits: bool = False,
    credits_must_not_exceed_debits: bool = False,
    metadata: dict[str, str] | None = None,
) -> CreateAccount:
    return CreateAccount(
        id=id or new_id("acc"),
        currency=currency,
        normal_balance=NormalBalance(normal_balance),
        debits_must_not_exceed_credits=debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=credits_must_not_exceed_debits,
        metadata=_metadata(metadata),
    )


def create_transfer(
    *,
    debit_account_id: str,
    credit_account_id: str,
    amount: int,
    id: str | None = None,
    currency: str | None = None,
    pending: bool = False,
    timeout_seconds: int | None = None,
    metadata: dict[str, str] | None = None,
) -> CreateTransfer:
    return CreateTransfer(
        id=id or new_id("trf"),
        debit_account_id=debit_account_id,
        credit_account_id=credit_account_id,
        amount=amount,
        currency=currency,
        pending=pending,
        timeout_seconds=timeout_seconds,
        metadata=_metadata(metadata),
    )


def post_pending(
    pending_id: str,
    *,
    id: str | None = None,
    amount: int | None = None,
    metadata: dict[str, str] | None = None,
) -> PostPending:
    """None for ``amount`` posts the whole pending amount."""
    return PostPending(
        id=id or new_id("trf"),
        pending_id=pending_id,
        amount=amount,
        metadata=_metadata(metadata),
    )


def void_pending(
    pending_id: str, *, id: str | None = None, metadata: dict[str, str] | None = None
) -> VoidPending:
    return VoidPending(id=id or new_id("trf"), pending_id=pending_id, metadata=_metadata(metadata))


def _metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    # Not copied: a command is built from a freshly decoded request, and the core
    # copies what it keeps.
    return {} if metadata is None else metadata
