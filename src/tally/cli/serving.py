"""The server process of ``tally serve``: uvicorn, granian or hypercorn over the app,
the transport each speaks (TLS, HTTP/2, HTTP/3: docs/protocols.md), and the one
logging setup every process uses.

``tally serve`` migrates and checks the schema, then replaces itself (``exec``)
with ``python -m tally.cli.serving``, so that the serving process (with one
worker, the only one) never imports what the command line needed: typer, rich,
Alembic and SQLAlchemy, about 25 MiB of memory that a server holding ten
thousand event streams has better use for (docs/events.md).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tally.cli.transport import GRACEFUL_SHUTDOWN_SECONDS, KEEP_ALIVE_SECONDS, tls_context
from tally.config import Settings, get_settings

APP_FACTORY = "tally.cli.serving:app_factory"


def _uvicorn_tls(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: ours instead of its default (which lets
    OpenSSL's configuration pick the floor and offers CBC ciphers). Module-level,
    so that a worker process (spawned, so pickled) finds it by name."""
    return tls_context(config.ssl_certfile, config.ssl_keyfile, ["http/1.1"])


def run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    tls: dict[str, Any] = {}
    if settings.tls:
        tls = {
            "ssl_certfile": settings.tls_cert,
            "ssl_keyfile": settings.tls_key,
            "ssl_context_factory": _uvicorn_tls,
        }
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
        # Tally's HTTP/1.1 protocol on httptools: a JSON answer in one send, less
        # work per request than uvicorn's own (tally.cli.http1; docs/performance.md).
        http="tally.cli.http1:Http1Protocol",
        # The sans-I/O implementation: no tasks of its own per connection (the
        # legacy one keeps three), which is most of a WebSocket's memory at 10,000
        # (docs/events.md). Clients send one small message at most (auth).
        ws="websockets-sansio",
        ws_max_size=64 * 1024,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        proxy_headers=False,
        **tls,
    )


def run_granian(settings: Settings, host: str, port: int, workers: int) -> None:
    """The same app under granian's ASGI interface: one process per worker (even one),
    each with its own lifespan, so its own writer and pool, as under uvicorn.

    On SIGTERM or SIGINT granian stops accepting, lets requests in flight finish and
    runs each worker's lifespan shutdown (queued writes commit); a worker still
    running GRACEFUL_SHUTDOWN_SECONDS later is killed. A worker that dies is
    started again, as uvicorn's supervisor does, except that granian (2.8) exits
    altogether when one dies again within 5.5 s of its restart.

    With ``http2`` granian runs in its ``auto`` mode: over TLS the client picks h2
    or HTTP/1.1 by ALPN; on a plain port a connection that opens with HTTP/2's
    preface is h2c (prior knowledge), any other HTTP/1.1. Without it, HTTP/1 only,
    as uvicorn's httptools: no sniffing of each connection (docs/protocols.md)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.log import LogLevels

    tls: dict[str, Any] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = {
            "ssl_cert": Path(settings.tls_cert),
            "ssl_key": Path(settings.tls_key),
            # granian's own floor is TLS 1.3; the contract is 1.2 (older clients).
            "ssl_protocol_min": SSLProtocols.tls12,
        }

    Granian(
        APP_FACTORY,
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.auto if settings.http2 else HTTPModes.http1,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=log_config(settings.log_level, settings.log_format),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_SHUTDOWN_SECONDS,
        **tls,
    ).serve()


def app_factory() -> Any:
    """The HTTP app, with the gRPC server beside it when TALLY_GRPC_PORT is set
    (tally.grpc.server says why in the same process)."""
    from tally.api.app import app_factory as http_app

    if get_settings().grpc_port is None:
        # Not even imported: grpcio, protobuf and their health and reflection
        # services hold about 12 MiB in every process that imports them (83.9
        # against 71.4 MiB of RSS for a server at rest), which a server of ten
        # thousand event streams without gRPC has better use for (docs/events.md).
        return http_app()
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
            "hypercorn.access": {"level": "WARNING"},
            # Tally's own access lines (TALLY_ACCESS_LOG) show whatever the level:
            # turning them on is the operator's explicit choice.
            "tally.access": {"level": "INFO"},
        },
    }


def main(argv: list[str]) -> None:
    """``python -m tally.cli.serving SERVER HOST PORT WORKERS``."""
    server, host, port, workers = argv
    if server == "hypercorn":
        from tally.cli.hypercorn_server import run_hypercorn

        run_hypercorn(get_settings(), host, int(port), log_config, app_factory)
        return
    run = run_granian if server == "granian" else run_uvicorn
    run(get_settings(), host, int(port), int(workers))


if __name__ == "__main__":
    main(sys.argv[1:])
