"""The ledger core alone: CPU per transfer of ``Book.execute`` on a batch of creates.

No database, no HTTP: what the engine itself costs per transfer, the floor under
every write. Best of ``--repeat`` runs, so a busy machine inflates it less.

    .venv/bin/python bench/core_book.py            # 1,000 creates over 200 accounts
    .venv/bin/python bench/core_book.py --batch 100 --accounts 2
"""

from __future__ import annotations

import argparse
import random
import time

from tally.core import Account, Book, CreateTransfer
from tally.core.model import AccountStatus, NormalBalance


def accounts(count: int) -> list[Account]:
    return [
        Account(
            id=f"a{i}",
            currency="USD",
            normal_balance=NormalBalance.CREDIT,
            debits_must_not_exceed_credits=False,
            credits_must_not_exceed_debits=False,
            metadata={},
            status=AccountStatus.OPEN,
            created_at_us=1,
            updated_at_us=1,
            sequence=i,
        )
        for i in range(count)
    ]


def measure(batch: int = 1_000, accounts_n: int = 200, repeat: int = 30) -> float:
    """µs of CPU per transfer, the best of ``repeat`` runs of one batch of creates.
    Also ``make bench``'s gauge of how fast Python runs on this machine today
    (bench/run.py measures it before and after its points)."""
    rng = random.Random(1)
    book_accounts = accounts(accounts_n)
    commands = []
    for k in range(batch):
        debit, credit = rng.sample(range(accounts_n), 2)
        commands.append(CreateTransfer(f"t{k}", f"a{debit}", f"a{credit}", 1))
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        book = Book(book_accounts, [], now_us=10, last_sequence=0)
        book.execute(commands, atomic=False)
        book.changes()
        best = min(best, time.process_time() - started)
    return best * 1e6 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    per_transfer_us = measure(args.batch, args.accounts, args.repeat)
    print(f"Book.execute: {per_transfer_us:.2f} us of CPU per transfer (best of {args.repeat})")


if __name__ == "__main__":
    main()
