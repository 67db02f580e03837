"""The words a caller reads for each of the core's refusals (an outcome's ``detail``).

Each says what was wrong with the numbers or ids involved and what to do next, in
the API's own terms (field names, ids, amounts in minor units), never the code's.
The ``code`` is the stable part a program reads; these are for people, and may be
reworded.
"""

from __future__ import annotations

from tally.core.model import AMOUNT_MAX, Account, Transfer


def flags_exclusive() -> str:
    return (
        "An account takes at most one limit: debits_must_not_exceed_credits or "
        "credits_must_not_exceed_debits, not both."
    )


def account_not_found(account_id: str) -> str:
    return f"No account with id {account_id!r}."


def account_changed(account: Account) -> str:
    return (
        f"Account {account.id!r} changed since that ETag (it is now at version "
        f'{account.version}, ETag "{account.version}"); read it again, then retry with '
        "its current ETag."
    )


def too_many_metadata_keys(keys: int, keys_max: int) -> str:
    return (
        f"With this change the metadata would have {keys} keys, more than {keys_max}; "
        "remove some (a null value removes a key)."
    )


def timeout_requires_pending() -> str:
    return (
        "timeout_seconds applies only to a pending transfer: add pending: true, or leave "
        "timeout_seconds out."
    )


def same_account(account_id: str) -> str:
    return (
        f"The debit and the credit account are both {account_id!r}; a transfer moves "
        "money between two different accounts."
    )


def side_not_found(side: str, account_id: str) -> str:
    return (
        f"There is no {side} account with id {account_id!r}: create it first "
        "(POST /v1/accounts), or check the id."
    )


def currencies_differ(debit: Account, credit: Account) -> str:
    return (
        f"The debit account {debit.id!r} is in {debit.currency} and the credit account "
        f"{credit.id!r} in {credit.currency}; a transfer moves one currency between two "
        "accounts of that currency."
    )


def currency_mismatch(accounts_currency: str, asked: str) -> str:
    return (
        f"The transfer's currency is {asked}, but both accounts are in "
        f"{accounts_currency}: send currency {accounts_currency}, or leave it out."
    )


def closed(side: str, account_id: str, *, posting: bool = False) -> str:
    if posting:
        return (
            f"The {side} account {account_id!r} is closed, so this pending transfer can be "
            "voided but not posted."
        )
    return f"The {side} account {account_id!r} is closed: it takes no new transfers."


def overflows(side: str, account_id: str) -> str:
    return (
        f"The {side}s of account {account_id!r} (pending and posted) would pass "
        f"{AMOUNT_MAX} (2^63-1), the most an account can hold; use another account."
    )


def exceeds_credits(debit: Account, amount: int) -> str:
    available = max(0, debit.credits_posted - debit.debits_posted - debit.debits_pending)
    then = "Move money in first." if available == 0 else f"Transfer at most {available}."
    return (
        f"Account {debit.id!r} has {available} available (posted credits minus posted and "
        f"pending debits: its debits_must_not_exceed_credits limit), and this transfer "
        f"needs {amount}. {then}"
    )


def exceeds_debits(credit: Account, amount: int) -> str:
    room = max(0, credit.debits_posted - credit.credits_posted - credit.credits_pending)
    then = "Debit it first." if room == 0 else f"Transfer at most {room}."
    return (
        f"Account {credit.id!r} can take {room} more in credits (posted debits minus "
        f"posted and pending credits: its credits_must_not_exceed_debits limit), and this "
        f"transfer would add {amount}. {then}"
    )


def pending_not_found(pending_id: str) -> str:
    return f"There is no transfer with id {pending_id!r} to post or void."


def exceeds_pending_amount(pending: Transfer, amount: int) -> str:
    return (
        f"The post's amount {amount} is more than the {pending.amount} that pending "
        f"transfer {pending.id!r} holds: post at most {pending.amount}, or leave amount "
        "out to post all of it."
    )


def never_pending(pending: Transfer) -> str:
    return (
        f"Transfer {pending.id!r} was not created pending (pending: true), so there is "
        "nothing to post or void."
    )


def already(pending: Transfer, what: str) -> str:
    return (
        f"The pending transfer {pending.id!r} was already {what}: a pending transfer is "
        "posted, voided or expires once."
    )


def expired(pending: Transfer) -> str:
    return (
        f"The pending transfer {pending.id!r} reached its timeout "
        f"({pending.timeout_seconds} s) and its hold was released; create a new transfer."
    )


def exists_with_different_fields(object_id: str, differences: tuple[str, ...]) -> str:
    return (
        f"{object_id!r} exists already, with a different {', '.join(differences)}: use "
        "another id for a new object, or send the same fields to get the existing one."
    )


def linked_failure(failed_index: int) -> str:
    return (
        f"Not applied: item {failed_index} of this atomic batch failed, and an atomic "
        "batch applies all of its items or none."
    )
