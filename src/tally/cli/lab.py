"""``tally lab``: the fundamentals, shown live (``tally.lab``). Each command runs
on this machine, on loopback and throwaway files only, bounded in size, and
prints a measured table.

Each command imports its experiment when it runs: the ledger's pulls in the
whole HTTP app, and every other ``tally`` command would pay for it at start.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tally.cli.root import app, typer_app

lab = typer_app("Small experiments that show a fundamental live, with measured tables.")
app.add_typer(lab, name="lab")
CONNECTIONS_MAX = 20_000


@lab.command("connections")
def connections(
    count: Annotated[
        int, typer.Option("--connections", min=1, max=CONNECTIONS_MAX, help="Idle connections.")
    ] = 2_000,
) -> None:
    """Hold idle connections with a thread each, then with one event loop (C10k)."""
    from tally.lab import connections as connections_lab

    limit = connections_lab.raise_open_files_limit(count + 256)
    if limit < count + 64:
        typer.echo(
            f"the open-files limit is {limit}: run with --connections {limit - 64}", err=True
        )
        raise typer.Exit(2)
    results = [connections_lab.hold(model, count) for model in connections_lab.MODELS]
    typer.echo(connections_lab.table(results))


@lab.command("double-submit")
def double_submit() -> None:
    """Send one transfer twice at once, as a double click does, without and with an
    Idempotency-Key, and count the transfers made."""
    from tally.lab import ledger as ledger_lab

    typer.echo(ledger_lab.double_submit_table(asyncio.run(ledger_lab.double_submit())))


@lab.command("batching")
def batching(
    transfers: Annotated[int, typer.Option(min=1, max=100_000)] = 2_000,
    clients: Annotated[int, typer.Option(min=1, max=1_000)] = 64,
) -> None:
    """Single transfers from many clients: one transaction each, then the batching
    writer sharing each commit (and its fsync) among the requests waiting."""
    from tally.lab import ledger as ledger_lab

    results = asyncio.run(ledger_lab.batching(transfers, clients))
    typer.echo(ledger_lab.batching_table(results, clients))


@lab.command("hashing")
def hashing(
    keys: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
    workers: Annotated[int, typer.Option(min=1, max=1_000)] = 4,
) -> None:
    """Add a worker: how many keys move under modulo hashing, and under the
    rendezvous hashing that spreads webhook endpoints over Tally's processes."""
    from tally.lab import hashing as hashing_lab

    typer.echo(hashing_lab.table(hashing_lab.join(keys, workers)))
