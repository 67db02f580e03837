"""``tally serve``: the HTTP server, and the one logging setup every process uses."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tally.config import Settings, get_settings
from tally.storage.schema import SchemaNotReady, require_up_to_date
from tally.storage.schema import migrate as run_migrations


def _default(name: str) -> str:
    """A setting's default as help shows it. The options themselves default to None,
    so that the setting (its environment variable, else this default) decides."""
    value = Settings.model_fields[name].default
    return f"[default: {value}, or TALLY_{name.upper()} when set]"


def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help=f"Address to listen on. {_default('host')}"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", help=f"Port to listen on. {_default('port')}", min=1, max=65535
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help=f"Server processes. {_default('workers')}", min=1),
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Migrate the database first (tally migrate).")
    ] = True,
) -> None:
    """Run the HTTP server (uvicorn, with uvloop and httptools)."""
    import uvicorn

    settings = get_settings()
    if migrate:
        run_migrations(settings)
    try:
        require_up_to_date(settings)
    except SchemaNotReady as exc:
        typer.echo(f"tally serve: {exc}", err=True)
        raise typer.Exit(1) from None
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
            # Tally's own access lines (TALLY_ACCESS_LOG) show whatever the level:
            # turning them on is the operator's explicit choice.
            "tally.access": {"level": "INFO"},
        },
    }
