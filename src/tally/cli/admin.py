"""The server's commands: ``serve``, ``migrate`` and the operator's tasks.

Every command that touches the database runs through the same services the
server uses (``tally.identity.tenants``, ``tally.audit``, ``tally.storage.schema``),
never SQL of its own. Help is plain text (typer's ``rich_markup_mode=None``): the
rich panels label every flag ``<bool>``, which reads as a value to type.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from tally.audit import AuditLog, Verdict
from tally.cli import lab as _lab  # noqa: F401  (registers `tally lab`: it needs the server)
from tally.cli.root import AS_JSON, app, emit, typer_app
from tally.cli.server import dev_cert, serve
from tally.config import Settings, get_settings
from tally.identity import tenants as operator
from tally.identity.repository import KeyRecord
from tally.identity.tenants import create_tenant
from tally.identity.tokens import rotate_signing_key
from tally.storage import Store, make_store
from tally.storage.schema import SchemaNotReady
from tally.storage.schema import migrate as run_migrations
from tally.support.clock import format_time, wall_clock_us

T = TypeVar("T")


app.command()(serve)
app.command("dev-cert")(dev_cert)
tenants = typer_app("Tenants: make one with an API key, or list them.")
app.add_typer(tenants, name="tenants")
api_keys = typer_app("Any tenant's API keys: list them, revoke one.")
app.add_typer(api_keys, name="api-keys")
audit_app = typer_app("The hash-chained audit log.")
app.add_typer(audit_app, name="audit")
signing_keys = typer_app("The keys that sign access tokens.")
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
    try:
        applied = run_migrations(settings)
    except SchemaNotReady as exc:
        typer.echo(f"tally migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    for revision in applied:
        typer.echo(f"applied {revision.id}: {revision.summary}", err=True)
    if not applied:
        typer.echo("the database schema was already up to date; nothing to apply", err=True)


async def new_tenant(settings: Settings, name: str) -> tuple[str, str]:
    """A tenant and an API key with every scope: (tenant id, the key)."""
    return await with_store(settings, lambda store: create_tenant(store, name, wall_clock_us()))


@tenants.command("create")
def tenants_create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name for people to recognise it by.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object and nothing else.")
    ] = False,
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


@tenants.command("list")
def tenants_list(as_json: Annotated[bool, AS_JSON] = False) -> None:
    """List every tenant: id, created, name (oldest first)."""
    settings = get_settings()
    run_migrations(settings)

    async def work(store: Store) -> int:
        count = 0
        async for t in operator.tenants(store):
            count += 1
            row = {"tenant_id": t.id, "name": t.name, "created_at": format_time(t.created_at_us)}
            emit(row, as_json, f"{t.id}  {row['created_at']}  {t.name}")
        return count

    count = asyncio.run(with_store(settings, work))
    typer.echo(f"{count} tenant(s)", err=True)


def _key_row(key: KeyRecord) -> dict[str, Any]:
    revoked = None if key.revoked_at_us is None else format_time(key.revoked_at_us)
    return {
        "id": key.id,
        "prefix": f"tly_{key.id}",
        "tenant_id": key.tenant_id,
        "name": key.name,
        "scopes": key.scopes.split(),
        "created_at": format_time(key.created_at_us),
        "revoked_at": revoked,
    }


@api_keys.command("list")
def api_keys_list(
    tenant_id: Annotated[
        str, typer.Argument(metavar="TENANT_ID", help="The tenant (tally tenants list).")
    ],
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """List a tenant's API keys, revoked ones too: prefix, name, scopes, state. Never
    a secret (only its hash is stored)."""
    settings = get_settings()
    run_migrations(settings)

    async def work(store: Store) -> int | None:
        if await operator.tenant(store, tenant_id) is None:
            return None
        count = 0
        async for key in operator.api_keys(store, tenant_id):
            count += 1
            row = _key_row(key)
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            text = f"{row['prefix']}  {state}  {' '.join(row['scopes'])}  {key.name}"
            emit(row, as_json, text)
        return count

    count = asyncio.run(with_store(settings, work))
    if count is None:
        typer.echo(f"no tenant has id {tenant_id!r}: see `tally tenants list`", err=True)
        raise typer.Exit(1)
    typer.echo(f"{count} API key(s)", err=True)


@api_keys.command("revoke")
def api_keys_revoke(
    key: Annotated[
        str, typer.Argument(metavar="KEY", help="The key's id, or its prefix tly_<id>.")
    ],
) -> None:
    """Revoke an API key of any tenant, at once; recorded in that tenant's audit log
    (actor: operator). Revoking a revoked key changes nothing."""
    settings = get_settings()
    run_migrations(settings)
    key_id = key.removeprefix("tly_").split("_", 1)[0]
    now_us = wall_clock_us()
    found = asyncio.run(
        with_store(settings, lambda store: operator.revoke_api_key(store, key_id, now_us))
    )
    if found is None:
        typer.echo(f"no API key has id {key_id!r}: see `tally api-keys list TENANT_ID`", err=True)
        raise typer.Exit(1)
    row = _key_row(found)
    typer.echo(
        f"revoked {row['prefix']} ({found.name}) of {found.tenant_id} at {row['revoked_at']}"
    )


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


__all__ = ["app", "new_tenant"]
