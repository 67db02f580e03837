"""The ledger state machine: the one place where ledger rules live.

A ``Book`` holds the slice of one tenant's ledger that a batch touches (the
accounts and transfers the storage adapter loaded, under lock) and applies
commands to it in order, deciding each one's outcome. It does no I/O and reads no
clock, so the same code decides for SQLite, for PostgreSQL and for the in-memory
model the tests compare against.

Afterwards ``changes()`` says what to persist: accounts to insert or update,
transfers to insert or update, balance-history rows and events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from msgspec import Struct

from tally.core import messages
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
from tally.core.model import (
    AMOUNT_MAX,
    METADATA_KEYS_MAX,
    Account,
    AccountStatus,
    BalanceChange,
    Event,
    EventType,
    Transfer,
    TransferStatus,
)

MICROSECONDS_PER_SECOND = 1_000_000


class Status(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    UPDATED = "updated"
    FAILED = "failed"
    # An expiry that found nothing to do (already resolved, or not yet due).
    SKIPPED = "skipped"


class Outcome(Struct, frozen=True, gc=False):
    status: Status
    object: Account | Transfer | None = None
    code: Code | None = None
    detail: str = ""
    # For exists_with_different_fields: the fields that differ.
    fields: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED


def _failed(code: Code, detail: str, fields: tuple[str, ...] = ()) -> Outcome:
    return Outcome(Status.FAILED, code=code, detail=detail, fields=fields)


@dataclass(slots=True)
class Changes:
    accounts_created: list[Account] = field(default_factory=list)
    accounts_updated: list[Account] = field(default_factory=list)
    transfers_created: list[Transfer] = field(default_factory=list)
    transfers_updated: list[Transfer] = field(default_factory=list)
    balance_changes: list[BalanceChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


_MISSING = object()


class Book:
    """One tenant's ledger slice for the duration of one write transaction."""

    def __init__(
        self,
        accounts: Iterable[Account],
        transfers: Iterable[Transfer],
        *,
        now_us: int,
        last_sequence: int,
    ) -> None:
        self.accounts: dict[str, Account] = {a.id: a for a in accounts}
        self.transfers: dict[str, Transfer] = {t.id: t for t in transfers}
        self._loaded_accounts = dict(self.accounts)
        self._loaded_transfers = dict(self.transfers)
        self.now_us = now_us
        self.last_sequence = last_sequence
        self._events: list[Event] = []
        self._balance_changes: list[BalanceChange] = []
        # Undo log of the atomic batch being applied: (table, key, previous value).
        self._journal: list[tuple[dict[str, object], str, object]] | None = None

    # -- applying commands ------------------------------------------------------

    def execute(self, commands: Sequence[Command], *, atomic: bool = False) -> list[Outcome]:
        """Apply commands in order; each sees the effects of the earlier ones.

        Atomic: if any command fails, none is applied; the first failure keeps its
        code and every other command reports ``linked_event_failed``.
        """
        if not atomic:
            return [self.apply(command) for command in commands]
        mark = self._begin()
        outcomes: list[Outcome] = []
        for command in commands:
            outcome = self.apply(command)
            outcomes.append(outcome)
            if not outcome.ok:
                self._rollback(mark)
                return self._linked_failure(outcomes, len(commands))
        self._journal = None
        return outcomes

    def apply(self, command: Command) -> Outcome:
        if isinstance(command, CreateTransfer):
            return self._create_transfer(command)
        if isinstance(command, PostPending | VoidPending):
            return self._resolve_pending(command)
        if isinstance(command, ExpirePending):
            return self._expire(command)
        if isinstance(command, CreateAccount):
            return self._create_account(command)
        return self._update_account(command)

    @staticmethod
    def _linked_failure(outcomes: list[Outcome], count: int) -> list[Outcome]:
        failed_index = len(outcomes) - 1
        linked = _failed(Code.LINKED_EVENT_FAILED, messages.linked_failure(failed_index))
        return [outcomes[failed_index] if i == failed_index else linked for i in range(count)]

    # -- accounts ---------------------------------------------------------------

    def _create_account(self, c: CreateAccount) -> Outcome:
        existing = self.accounts.get(c.id)
        if existing is not None:
            return self._exists(existing, _account_differences(existing, c))
        if c.debits_must_not_exceed_credits and c.credits_must_not_exceed_debits:
            return _failed(Code.FLAGS_ARE_MUTUALLY_EXCLUSIVE, messages.flags_exclusive())
        sequence = self._next_sequence()
        account = Account(
            id=c.id,
            currency=c.currency,
            normal_balance=c.normal_balance,
            debits_must_not_exceed_credits=c.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits=c.credits_must_not_exceed_debits,
            metadata=dict(c.metadata),
            status=AccountStatus.OPEN,
            created_at_us=self.now_us,
            updated_at_us=self.now_us,
            sequence=sequence,
        )
        self._put(self.accounts, account.id, account)
        self._event("account.created", account, sequence)
        return Outcome(Status.CREATED, account)

    def _update_account(self, c: UpdateAccount) -> Outcome:
        account = self.accounts.get(c.id)
        if account is None:
            return _failed(Code.NOT_FOUND, messages.account_not_found(c.id))
        if c.expected_version is not None and c.expected_version != account.version:
            return _failed(Code.PRECONDITION_FAILED, messages.account_changed(account))
        metadata = account.metadata
        if c.metadata is not None:
            metadata = _merge_metadata(account.metadata, c.metadata)
            if len(metadata) > METADATA_KEYS_MAX:
                return _failed(
                    Code.VALIDATION_ERROR,
                    messages.too_many_metadata_keys(len(metadata), METADATA_KEYS_MAX),
                    ("metadata",),
                )
        closing = c.close and account.status is AccountStatus.OPEN
        if metadata == account.metadata and not closing:
            return Outcome(Status.UPDATED, account)
        updated = account.evolve(
            metadata=metadata,
            status=AccountStatus.CLOSED if c.close else account.status,
            version=account.version + 1,
            updated_at_us=self.now_us,
        )
        self._put(self.accounts, updated.id, updated)
        self._event("account.closed" if closing else "account.updated", updated)
        return Outcome(Status.UPDATED, updated)

    # -- transfers --------------------------------------------------------------

    def _create_transfer(self, c: CreateTransfer) -> Outcome:
        existing = self.transfers.get(c.id)
        if existing is not None:
            return self._exists(existing, _transfer_differences(existing, c))
        if c.timeout_seconds is not None and not c.pending:
            return _failed(Code.TIMEOUT_REQUIRES_PENDING, messages.timeout_requires_pending())
        if c.debit_account_id == c.credit_account_id:
            return _failed(
                Code.ACCOUNTS_MUST_BE_DIFFERENT, messages.same_account(c.debit_account_id)
            )
        debit = self.accounts.get(c.debit_account_id)
        if debit is None:
            detail = messages.side_not_found("debit", c.debit_account_id)
            return _failed(Code.DEBIT_ACCOUNT_NOT_FOUND, detail)
        credit = self.accounts.get(c.credit_account_id)
        if credit is None:
            detail = messages.side_not_found("credit", c.credit_account_id)
            return _failed(Code.CREDIT_ACCOUNT_NOT_FOUND, detail)
        refused = _refuse_movement(debit, credit, c.amount, c.currency)
        if refused is not None:
            return refused
        refused = _refuse_limits(debit, credit, c.amount)
        if refused is not None:
            return refused

        sequence = self._next_sequence()
        transfer = Transfer(
            id=c.id,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=c.amount,
            currency=debit.currency,
            pending=c.pending,
            status=TransferStatus.PENDING if c.pending else TransferStatus.POSTED,
            metadata=dict(c.metadata),
            created_at_us=self.now_us,
            sequence=sequence,
            timeout_seconds=c.timeout_seconds,
            expires_at_us=(
                self.now_us + c.timeout_seconds * MICROSECONDS_PER_SECOND
                if c.timeout_seconds is not None
                else None
            ),
        )
        if c.pending:
            self._move(transfer, debit, credit, pending_delta=c.amount, posted_delta=0)
        else:
            self._move(transfer, debit, credit, pending_delta=0, posted_delta=c.amount)
        self._put(self.transfers, transfer.id, transfer)
        self._event("transfer.created", transfer, sequence)
        return Outcome(Status.CREATED, transfer)

    def _resolve_pending(self, c: PostPending | VoidPending) -> Outcome:
        posting = isinstance(c, PostPending)
        existing = self.transfers.get(c.id)
        if existing is not None:
            return self._exists(existing, _resolution_differences(existing, c, self.transfers))
        pending = self.transfers.get(c.pending_id)
        if pending is None:
            return _failed(
                Code.PENDING_TRANSFER_NOT_FOUND, messages.pending_not_found(c.pending_id)
            )
        refused = self._refuse_resolution(pending)
        if refused is not None:
            return refused
        amount = pending.amount
        if isinstance(c, PostPending) and c.amount is not None:
            if c.amount > pending.amount:
                return _failed(
                    Code.EXCEEDS_PENDING_TRANSFER_AMOUNT,
                    messages.exceeds_pending_amount(pending, c.amount),
                )
            amount = c.amount
        debit = self.accounts[pending.debit_account_id]
        credit = self.accounts[pending.credit_account_id]
        # A void only releases a reservation, so it is allowed on closed accounts
        # (otherwise closing would trap the reserved money); a post moves money and
        # is refused like any new transfer.
        if posting and debit.status is AccountStatus.CLOSED:
            detail = messages.closed("debit", debit.id, posting=True)
            return _failed(Code.DEBIT_ACCOUNT_CLOSED, detail)
        if posting and credit.status is AccountStatus.CLOSED:
            detail = messages.closed("credit", credit.id, posting=True)
            return _failed(Code.CREDIT_ACCOUNT_CLOSED, detail)

        sequence = self._next_sequence()
        status = TransferStatus.POSTED if posting else TransferStatus.VOIDED
        record = Transfer(
            id=c.id,
            debit_account_id=debit.id,
            credit_account_id=credit.id,
            amount=amount,
            currency=pending.currency,
            pending=False,
            status=status,
            metadata=dict(c.metadata),
            created_at_us=self.now_us,
            sequence=sequence,
            pending_id=pending.id,
        )
        self._move(
            record,
            debit,
            credit,
            pending_delta=-pending.amount,
            posted_delta=amount if posting else 0,
        )
        self._put(
            self.transfers, pending.id, pending.evolve(status=status, resolved_at_us=self.now_us)
        )
        self._put(self.transfers, record.id, record)
        self._event("transfer.created", record, sequence)
        return Outcome(Status.CREATED, record)

    def _refuse_resolution(self, pending: Transfer) -> Outcome | None:
        if not pending.pending:
            return _failed(Code.PENDING_TRANSFER_NOT_PENDING, messages.never_pending(pending))
        if pending.status is TransferStatus.POSTED:
            detail = messages.already(pending, "posted")
            return _failed(Code.PENDING_TRANSFER_ALREADY_POSTED, detail)
        if pending.status is TransferStatus.VOIDED:
            detail = messages.already(pending, "voided")
            return _failed(Code.PENDING_TRANSFER_ALREADY_VOIDED, detail)
        if pending.status is TransferStatus.EXPIRED or self._is_due(pending):
            return _failed(Code.PENDING_TRANSFER_EXPIRED, messages.expired(pending))
        return None

    def _is_due(self, pending: Transfer) -> bool:
        return pending.expires_at_us is not None and self.now_us >= pending.expires_at_us

    def _expire(self, c: ExpirePending) -> Outcome:
        pending = self.transfers.get(c.pending_id)
        if pending is None or pending.status is not TransferStatus.PENDING:
            return Outcome(Status.SKIPPED, pending)
        if not self._is_due(pending):
            return Outcome(Status.SKIPPED, pending)
        debit = self.accounts[pending.debit_account_id]
        credit = self.accounts[pending.credit_account_id]
        expired = pending.evolve(status=TransferStatus.EXPIRED, resolved_at_us=self.now_us)
        self._move(expired, debit, credit, pending_delta=-pending.amount, posted_delta=0)
        self._put(self.transfers, expired.id, expired)
        self._event("transfer.expired", expired)
        return Outcome(Status.UPDATED, expired)

    # -- effects ------------------------------------------------------------------

    def _move(
        self,
        transfer: Transfer,
        debit: Account,
        credit: Account,
        *,
        pending_delta: int,
        posted_delta: int,
    ) -> None:
        """Apply one transfer's effect to both accounts, with its history rows."""
        new_debit = debit.moved(
            pending_delta=pending_delta, posted_delta=posted_delta, debit=True, now_us=self.now_us
        )
        new_credit = credit.moved(
            pending_delta=pending_delta, posted_delta=posted_delta, debit=False, now_us=self.now_us
        )
        for account in (new_debit, new_credit):
            assert 0 <= account.debits_pending <= AMOUNT_MAX, account
            assert 0 <= account.credits_pending <= AMOUNT_MAX, account
            assert 0 <= account.debits_posted <= AMOUNT_MAX, account
            assert 0 <= account.credits_posted <= AMOUNT_MAX, account
            self._put(self.accounts, account.id, account)
            self._balance_changes.append(BalanceChange(account, transfer.id))

    def _exists(self, existing: Account | Transfer, differences: tuple[str, ...]) -> Outcome:
        if differences:
            return _failed(
                Code.EXISTS_WITH_DIFFERENT_FIELDS,
                messages.exists_with_different_fields(existing.id, differences),
                differences,
            )
        return Outcome(Status.EXISTS, existing)

    def _next_sequence(self) -> int:
        self.last_sequence += 1
        return self.last_sequence

    def _event(
        self, type_: EventType, data: Account | Transfer, sequence: int | None = None
    ) -> None:
        # Creations share their sequence with their event, so that listing objects
        # in sequence order is listing them in commit order.
        if sequence is None:
            sequence = self._next_sequence()
        self._events.append(Event(sequence, type_, self.now_us, data))

    # -- atomic batches -------------------------------------------------------------

    def _put(
        self,
        table: dict[str, object] | dict[str, Account] | dict[str, Transfer],
        key: str,
        value: Account | Transfer,
    ) -> None:
        if self._journal is not None:
            self._journal.append((table, key, table.get(key, _MISSING)))  # type: ignore[arg-type]
        table[key] = value  # type: ignore[assignment]

    def _begin(self) -> tuple[int, int, int]:
        assert self._journal is None, "atomic batches do not nest"
        self._journal = []
        return (len(self._events), len(self._balance_changes), self.last_sequence)

    def _rollback(self, mark: tuple[int, int, int]) -> None:
        assert self._journal is not None
        for table, key, previous in reversed(self._journal):
            if previous is _MISSING:
                del table[key]
            else:
                table[key] = previous
        self._journal = None
        events, balance_changes, self.last_sequence = mark
        del self._events[events:]
        del self._balance_changes[balance_changes:]

    # -- results ----------------------------------------------------------------------

    def changes(self) -> Changes:
        out = Changes(events=list(self._events), balance_changes=list(self._balance_changes))
        for key, account in self.accounts.items():
            before = self._loaded_accounts.get(key)
            if before is None:
                out.accounts_created.append(account)
            elif before is not account:
                out.accounts_updated.append(account)
        for key, transfer in self.transfers.items():
            before_t = self._loaded_transfers.get(key)
            if before_t is None:
                out.transfers_created.append(transfer)
            elif before_t is not transfer:
                out.transfers_updated.append(transfer)
        return out


# -- rules that need no state of the book ---------------------------------------------


def _refuse_movement(
    debit: Account, credit: Account, amount: int, currency: str | None
) -> Outcome | None:
    if debit.currency != credit.currency:
        return _failed(
            Code.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY, messages.currencies_differ(debit, credit)
        )
    if currency is not None and currency != debit.currency:
        return _failed(Code.CURRENCY_MISMATCH, messages.currency_mismatch(debit.currency, currency))
    if debit.status is AccountStatus.CLOSED:
        return _failed(Code.DEBIT_ACCOUNT_CLOSED, messages.closed("debit", debit.id))
    if credit.status is AccountStatus.CLOSED:
        return _failed(Code.CREDIT_ACCOUNT_CLOSED, messages.closed("credit", credit.id))
    # Pending and posted together, so that posting a reservation can never overflow.
    if debit.debits_pending + debit.debits_posted + amount > AMOUNT_MAX:
        return _failed(Code.OVERFLOWS_DEBITS, messages.overflows("debit", debit.id))
    if credit.credits_pending + credit.credits_posted + amount > AMOUNT_MAX:
        return _failed(Code.OVERFLOWS_CREDITS, messages.overflows("credit", credit.id))
    return None


def _refuse_limits(debit: Account, credit: Account, amount: int) -> Outcome | None:
    # Reservations count: money held by a pending transfer cannot be spent twice.
    if debit.debits_must_not_exceed_credits and (
        debit.debits_pending + debit.debits_posted + amount > debit.credits_posted
    ):
        return _failed(Code.EXCEEDS_CREDITS, messages.exceeds_credits(debit, amount))
    if credit.credits_must_not_exceed_debits and (
        credit.credits_pending + credit.credits_posted + amount > credit.debits_posted
    ):
        return _failed(Code.EXCEEDS_DEBITS, messages.exceeds_debits(credit, amount))
    return None


def _merge_metadata(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _account_differences(existing: Account, c: CreateAccount) -> tuple[str, ...]:
    pairs: list[tuple[str, object, object]] = [
        ("currency", existing.currency, c.currency),
        ("normal_balance", existing.normal_balance, c.normal_balance),
        (
            "flags.debits_must_not_exceed_credits",
            existing.debits_must_not_exceed_credits,
            c.debits_must_not_exceed_credits,
        ),
        (
            "flags.credits_must_not_exceed_debits",
            existing.credits_must_not_exceed_debits,
            c.credits_must_not_exceed_debits,
        ),
        ("metadata", existing.metadata, c.metadata),
    ]
    return tuple(name for name, was, asked in pairs if was != asked)


def _transfer_differences(existing: Transfer, c: CreateTransfer) -> tuple[str, ...]:
    pairs: list[tuple[str, object, object]] = [
        ("pending_id", existing.pending_id, None),
        ("debit_account_id", existing.debit_account_id, c.debit_account_id),
        ("credit_account_id", existing.credit_account_id, c.credit_account_id),
        ("amount", existing.amount, c.amount),
        ("currency", existing.currency, c.currency or existing.currency),
        ("pending", existing.pending, c.pending),
        ("timeout_seconds", existing.timeout_seconds, c.timeout_seconds),
        ("metadata", existing.metadata, c.metadata),
    ]
    return tuple(name for name, was, asked in pairs if was != asked)


def _resolution_differences(
    existing: Transfer, c: PostPending | VoidPending, transfers: dict[str, Transfer]
) -> tuple[str, ...]:
    asked_status = TransferStatus.POSTED if isinstance(c, PostPending) else TransferStatus.VOIDED
    if existing.pending_id is None:
        return ("pending_id",)
    # The full amount the request asks for is that of the hold it names, which every
    # storage adapter loads; the hold the existing record resolved may not be loaded.
    pending = transfers.get(c.pending_id)
    if isinstance(c, PostPending):
        full = pending.amount if pending is not None else existing.amount
        asked_amount = c.amount if c.amount is not None else full
    else:
        asked_amount = existing.amount
    pairs: list[tuple[str, object, object]] = [
        ("pending_id", existing.pending_id, c.pending_id),
        ("action", existing.status, asked_status),
        ("amount", existing.amount, asked_amount),
        ("metadata", existing.metadata, c.metadata),
    ]
    return tuple(name for name, was, asked in pairs if was != asked)
