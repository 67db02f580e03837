"""The command line: ``tally serve``, ``tally migrate``, ``tally tenants create``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from tally.auth import ALL_SCOPES, new_api_key
from tally.config import Settings, get_settings
from tally.ids import new_id
from tally.storage import Store, make_store
from tally.storage.migrate import migrate as run_migrations

T = TypeVar("T")

app = typer.Typer(help="Tally, a double-entry ledger service.", no_args_is_help=True)
tenants = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app.add_typer(tenants, name="tenants")
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
signing_keys = typer.Typer(help="The keys that sign access tokens.", no_args_is_help=True)
app.add_typer(signing_keys, name="signing-keys")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes.", min=1)] = None,
    migrate: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
) -> None:
    """Run the HTTP server (uvicorn, with uvloop and httptools)."""
    import uvicorn

    settings = get_settings()
    if migrate:
        run_migrations(settings)
    uvicorn.run(
        "tally.api.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
    )


def log_config(level: str) -> dict[str, Any]:
    """One format for uvicorn's loggers, Tally's and everything else's.

    Without it only uvicorn's loggers have a handler, and a traceback logged by
    Tally (or asyncio) reaches stderr through Python's last-resort handler: no
    time, no level, no logger name, so nobody can tell what failed or when.
    """
    line = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": line}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},
        },
    }


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run again)."""
    run_migrations(get_settings())
    typer.echo("database is up to date", err=True)


async def _create_tenant(settings: Settings, name: str) -> tuple[str, str]:
    store = make_store(settings)
    await store.open()
    try:
        tenant_id = new_id("ten")
        key = new_api_key()
        await store.create_tenant(
            tenant_id,
            name,
            key.key_id,
            key.secret_sha256,
            " ".join(ALL_SCOPES),
            time.time_ns() // 1000,
        )
        return tenant_id, key.token
    finally:
        await store.close()


@tenants.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="A name for people to recognise it by.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON and nothing else.")] = False,
) -> None:
    """Create a tenant and an API key with every scope. The key is shown once."""
    if not 1 <= len(name) <= 200:
        typer.echo("NAME must be 1-200 characters", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    run_migrations(settings)
    tenant_id, api_key = asyncio.run(_create_tenant(settings, name))
    if as_json:
        sys.stdout.write(json.dumps({"tenant_id": tenant_id, "api_key": api_key}) + "\n")
        return
    typer.echo(f"tenant_id: {tenant_id}")
    typer.echo(f"api_key:   {api_key}")
    typer.echo("Store the API key now: it is shown only this once.", err=True)


async def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    store = make_store(settings)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


@audit_app.command("verify")
def audit_verify(
    seal_first: Annotated[
        bool, typer.Option(help="Seal the rows waiting to be sealed before checking.")
    ] = True,
) -> None:
    """Walk the audit chain; exit 1 and name every edited, deleted or added row."""
    from tally import audit

    settings = get_settings()
    run_migrations(settings)

    async def work(store: Store) -> audit.Verdict:
        if seal_first:
            while await audit.seal(store, settings.audit_seal_rows_max):
                pass
        return await audit.verify(store)

    verdict = asyncio.run(_with_store(settings, work))
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
    settings = get_settings()

    async def work(store: Store) -> list[Any]:
        return await store.fetch("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")

    rows = asyncio.run(_with_store(settings, work))
    sys.stdout.write(json.dumps({"head_seq": rows[0][0], "head_hash": rows[0][1]}) + "\n")


@signing_keys.command("rotate")
def signing_keys_rotate() -> None:
    """Add a signing key and retire the others. Tokens they signed stay valid until
    they expire, so nobody is logged out; every process picks the new key up within
    TALLY_SIGNING_KEY_RELOAD_SECONDS."""
    from tally.identity.tokens import rotate_signing_key

    settings = get_settings()
    run_migrations(settings)
    kid = asyncio.run(
        _with_store(settings, lambda store: rotate_signing_key(store, time.time_ns() // 1000))
    )
    typer.echo(f"signing with {kid}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
