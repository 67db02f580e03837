"""The server process of ``tally serve``: uvicorn or granian over the app, and the
one logging setup every process uses.

``tally serve`` migrates and checks the schema, then replaces itself (``exec``)
with ``python -m tally.cli.serving``, so that the serving process (with one
worker, the only one) never imports what the command line needed: typer, rich,
Alembic and SQLAlchemy, about 25 MiB of memory that a server holding ten
thousand event streams has better use for (docs/events.md).
"""

from __future__ import annotations

import sys
from typing import Any

from tally.config import Settings, get_settings

APP_FACTORY = "tally.cli.serving:app_factory"
# How long a stopping worker lets requests in flight finish (then the writer drains).
GRACEFUL_SHUTDOWN_SECONDS = 10


def run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        # The app's __call__ returns the coroutine to await (tally.api.app._App):
        # say ASGI 3 rather than let uvicorn guess from whether it is a coroutine.
        interface="asgi3",
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
        log_config=log_config(settings.log_level, settings.log_format),
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        proxy_headers=False,
    )


def run_granian(settings: Settings, host: str, port: int, workers: int) -> None:
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
        log_dictconfig=log_config(settings.log_level, settings.log_format),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
    ).serve()


def app_factory() -> Any:
    """The HTTP app, with the gRPC server beside it when TALLY_GRPC_PORT is set
    (tally.grpc.server says why in the same process)."""
    from tally.api.app import app_factory as http_app
    from tally.grpc.server import grpc_companion

    return http_app(companions=(grpc_companion,))


def log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """One format for uvicorn's loggers, Tally's and everything else's: a line of
    text, or (``json``) one JSON object per record with the request id.

    Without it only uvicorn's loggers have a handler, and a traceback logged by
    Tally (or asyncio) reaches stderr through Python's last-resort handler: no
    time, no level, no logger name, so nobody can tell what failed or when.
    """
    line = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    formatter: dict[str, Any] = {"format": line}
    if log_format == "json":
        formatter = {"()": "tally.support.logs.JsonFormatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
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


def main(argv: list[str]) -> None:
    """``python -m tally.cli.serving SERVER HOST PORT WORKERS``."""
    server, host, port, workers = argv
    run = run_granian if server == "granian" else run_uvicorn
    run(get_settings(), host, int(port), int(workers))


if __name__ == "__main__":
    main(sys.argv[1:])
