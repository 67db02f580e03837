"""``tally serve``: the HTTP server, and the one logging setup every process uses."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from tally.config import Settings, get_settings
from tally.storage.schema import SchemaNotReady, require_up_to_date
from tally.storage.schema import migrate as run_migrations

APP_FACTORY = "tally.api.app:app_factory"
# How long a stopping worker lets requests in flight finish (then the writer drains).
GRACEFUL_SHUTDOWN_SECONDS = 10


class HttpServer(StrEnum):
    uvicorn = "uvicorn"
    granian = "granian"


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
    server: Annotated[
        HttpServer,
        typer.Option(
            envvar="TALLY_HTTP_SERVER",
            help="The HTTP server that runs the app: uvicorn (httptools) or granian "
            "(its ASGI interface); both on uvloop.",
        ),
    ] = HttpServer.uvicorn,
) -> None:
    """Run the HTTP server (uvicorn or granian, on uvloop)."""
    settings = get_settings()
    if migrate:
        run_migrations(settings)
    try:
        require_up_to_date(settings)
    except SchemaNotReady as exc:
        typer.echo(f"tally serve: {exc}", err=True)
        raise typer.Exit(1) from None
    run = _run_granian if server is HttpServer.granian else _run_uvicorn
    run(settings, host or settings.host, port or settings.port, workers or settings.workers)


def _run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        # The sans-I/O implementation: no tasks of its own per connection (the
        # legacy one keeps three), which is most of a WebSocket's memory at 10,000
        # (docs/events.md). Clients send one small message at most (auth).
        ws="websockets-sansio",
        ws_max_size=64 * 1024,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        proxy_headers=False,
    )


def _run_granian(settings: Settings, host: str, port: int, workers: int) -> None:
    """The same app under granian's ASGI interface: one process per worker (even one),
    each with its own lifespan, so its own writer and pool, as under uvicorn.

    On SIGTERM or SIGINT granian stops accepting, lets requests in flight finish and
    runs each worker's lifespan shutdown (queued writes commit); a worker still
    running GRACEFUL_SHUTDOWN_SECONDS later is killed. A worker that dies is
    started again, as uvicorn's supervisor does, except that granian (2.8) exits
    altogether when one dies again within 5.5 s of its restart."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    Granian(
        APP_FACTORY,
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,  # as uvicorn's httptools: no HTTP/2 sniffing per connection
        log_level=LogLevels(settings.log_level),
        log_dictconfig=log_config(settings.log_level),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
    ).serve()


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
            "granian.access": {"level": "WARNING"},
            # Tally's own access lines (TALLY_ACCESS_LOG) show whatever the level:
            # turning them on is the operator's explicit choice.
            "tally.access": {"level": "INFO"},
        },
    }
