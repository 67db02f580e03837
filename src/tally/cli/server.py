"""``tally serve``: migrate, check the schema, then become the server process
(``tally.cli.serving``)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated

import typer

from tally.cli.serving import log_config
from tally.config import Settings, get_settings
from tally.storage.schema import SchemaNotReady, require_up_to_date
from tally.storage.schema import migrate as run_migrations


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
    grpc_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Also serve gRPC (tally.v1.Ledger, docs/grpc.md) on this port, on the "
            "same address. [default: off, or TALLY_GRPC_PORT when set]",
            min=1,
            max=65535,
        ),
    ] = None,
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
    try:
        if migrate:
            run_migrations(settings)
        require_up_to_date(settings)
    except SchemaNotReady as exc:
        typer.echo(f"tally serve: {exc}", err=True)
        raise typer.Exit(1) from None
    if grpc_port is not None:
        # The server process reads its settings from the environment (it is exec'd).
        os.environ["TALLY_GRPC_PORT"] = str(grpc_port)
        os.environ.setdefault("TALLY_GRPC_HOST", host or settings.host)
    args = [server.value, host or settings.host, str(port or settings.port)]
    args.append(str(workers or settings.workers))
    sys.stdout.flush()
    sys.stderr.flush()
    # A fresh interpreter with only the server's imports (tally.cli.serving says why).
    os.execv(sys.executable, [sys.executable, "-m", "tally.cli.serving", *args])  # noqa: S606


__all__ = ["log_config", "serve"]
