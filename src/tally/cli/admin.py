"""The ``tally`` command: the server and the operator's tasks.

Every command that touches the database runs through the same services the
server uses (``tally.identity.tenants``, ``tally.audit``, ``tally.storage.schema``),
never SQL of its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tally import __version__
from tally.audit import AuditLog, Verdict
from tally.cli.server import serve
from tally.config import Settings, get_settings
from tally.identity.tenants import create_tenant
from tally.identity.tokens import rotate_signing_key
from tally.storage import Store, make_store
from tally.storage.schema import migrate as run_migrations
from tally.support.clock import wall_clock_us

T = TypeVar("T")

app = typer.Typer(help="Tally, a double-entry ledger service.", no_args_is_help=True)
app.command()(serve)
tenants = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app.add_typer(tenants, name="tenants")
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
signing_keys = typer.Typer(help="The keys that sign access tokens.", no_args_is_help=True)
app.add_typer(signing_keys, name="signing-keys")

TENANT_NAME_CHARS_MAX = 200


async def with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the database, run ``work``, close it."""
    store = make_store(settings)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run again), and say what was applied."""
    settings = get_settings()
    applied = run_migrations(settings)
    for revision in applied:
        typer.echo(f"applied {revision.id}: {revision.summary}", err=True)
    if not applied:
        typer.echo("the database schema was already up to date; nothing to apply", err=True)


async def new_tenant(settings: Settings, name: str) -> tuple[str, str]:
    """A tenant and an API key with every scope: (tenant id, the key)."""
    return await with_store(settings, lambda store: create_tenant(store, name, wall_clock_us()))


@tenants.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="A name for people to recognise it by.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """Create a tenant and an API key with every scope. The key is shown once."""
    if not 1 <= len(name) <= TENANT_NAME_CHARS_MAX:
        typer.echo(f"NAME must be 1-{TENANT_NAME_CHARS_MAX} characters", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    run_migrations(settings)
    tenant_id, api_key = asyncio.run(new_tenant(settings, name))
    if as_json:
        sys.stdout.write(json.dumps({"tenant_id": tenant_id, "api_key": api_key}) + "\n")
        return
    typer.echo(f"tenant_id: {tenant_id}")
    typer.echo(f"api_key:   {api_key}")
    typer.echo("Store the API key now: it is shown only this once.", err=True)


@audit_app.command("verify")
def audit_verify(
    seal_first: Annotated[
        bool, typer.Option(help="Seal the rows waiting to be sealed before checking.")
    ] = True,
) -> None:
    """Walk the audit chain; exit 1 and name every edited, deleted or added row."""
    settings = get_settings()
    run_migrations(settings)
    rows_max = settings.audit_seal_rows_max if seal_first else None

    async def work(store: Store) -> Verdict:
        return await AuditLog(store).verify(seal_first_rows_max=rows_max)

    verdict = asyncio.run(with_store(settings, work))
    for problem in verdict.problems:
        typer.echo(f"TAMPERED: {problem}")
    typer.echo(
        f"{verdict.sealed} sealed rows checked, head at {verdict.head_seq},"
        f" {verdict.unsealed} not yet sealed: {'ok' if verdict.ok else 'FAILED'}",
        err=True,
    )
    if not verdict.ok:
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head() -> None:
    """Print the chain's head (number and hash): keep a copy elsewhere, so that even
    a rewrite of the whole table is detected."""
    head = asyncio.run(with_store(get_settings(), lambda store: AuditLog(store).head()))
    sys.stdout.write(json.dumps({"head_seq": head.seq, "head_hash": head.hash}) + "\n")


@signing_keys.command("rotate")
def signing_keys_rotate() -> None:
    """Add a signing key and retire the others. Tokens they signed stay valid until
    they expire, so nobody is logged out; every process picks the new key up within
    TALLY_SIGNING_KEY_RELOAD_SECONDS."""
    settings = get_settings()
    run_migrations(settings)
    kid = asyncio.run(
        with_store(settings, lambda store: rotate_signing_key(store, wall_clock_us()))
    )
    typer.echo(f"signing with {kid}")


__all__ = ["__version__", "app", "new_tenant"]
