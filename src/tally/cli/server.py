"""``tally serve``: migrate, check the schema, then become the server process
(``tally.cli.serving``); and ``tally dev-cert``, the local TLS pair it can serve."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from tally.cli.serving import log_config
from tally.cli.transport import transport_problem
from tally.config import Settings, get_settings
from tally.storage.schema import SchemaNotReady, require_up_to_date
from tally.storage.schema import migrate as run_migrations


class HttpServer(StrEnum):
    uvicorn = "uvicorn"
    granian = "granian"
    hypercorn = "hypercorn"


def _default(name: str) -> str:
    """A setting's default as help shows it. The options themselves default to None,
    so that the setting (its environment variable, else this default) decides."""
    value = Settings.model_fields[name].default
    shown = value
    if value is None or isinstance(value, bool):
        shown = {None: "none", True: "on", False: "off"}[value]
    return f"[default: {shown}, or TALLY_{name.upper()} when set]"


# The transport's options (docs/protocols.md), here to keep serve's signature short.
TlsCertOption = Annotated[
    Path | None,
    typer.Option(
        metavar="PATH",
        help="PEM certificate chain: serve https (TLS 1.2+, 1.3 preferred); with "
        f"--tls-key. {_default('tls_cert')}",
    ),
]
TlsKeyOption = Annotated[
    Path | None,
    typer.Option(metavar="PATH", help=f"Its PEM private key. {_default('tls_key')}"),
]
Http2Option = Annotated[
    bool | None,
    typer.Option(
        "--http2/--no-http2",
        help="HTTP/2 beside HTTP/1.1 (granian, hypercorn): h2 by ALPN over TLS, h2c "
        f"by prior knowledge without. {_default('http2')}",
        show_default=False,
    ),
]
QuicPortOption = Annotated[
    int | None,
    typer.Option(
        metavar="PORT",
        min=1,
        max=65535,
        help="Also HTTP/3 over QUIC on this UDP port (hypercorn, with TLS); "
        f"advertised by Alt-Svc. {_default('quic_port')}",
    ),
]


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
            help="The HTTP server that runs the app: uvicorn (httptools), granian "
            "(its ASGI interface) or hypercorn (the one with HTTP/3); all on uvloop.",
        ),
    ] = HttpServer.uvicorn,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    http2: Http2Option = None,
    quic_port: QuicPortOption = None,
) -> None:
    """Run the HTTP server (uvicorn, granian or hypercorn, on uvloop)."""
    given: dict[str, object] = {"tls_cert": tls_cert, "tls_key": tls_key, "http2": http2}
    given["quic_port"] = quic_port
    settings = _transport_settings(given)
    workers = workers or settings.workers
    problem = transport_problem(server.value, settings, workers)
    if problem is not None:
        typer.echo(f"tally serve: {problem}", err=True)
        raise typer.Exit(2)
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
    args = [server.value, host or settings.host, str(port or settings.port), str(workers)]
    sys.stdout.flush()
    sys.stderr.flush()
    # A fresh interpreter with only the server's imports (tally.cli.serving says why).
    os.execv(sys.executable, [sys.executable, "-m", "tally.cli.serving", *args])  # noqa: S606


def _transport_settings(given: dict[str, object]) -> Settings:
    """The settings with the transport options given on the command line, which
    also go into the environment: the server process reads its settings there."""
    transport = {f"TALLY_{k.upper()}": _env(v) for k, v in given.items() if v is not None}
    os.environ.update(transport)
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        typer.echo(f"tally serve: {_first_error(exc)}", err=True)
        raise typer.Exit(2) from None


def _env(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value.resolve() if isinstance(value, Path) else value)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where + ': ' if where else ''}{message}"


def dev_cert(
    directory: Annotated[
        Path,
        typer.Option("--dir", metavar="DIR", help="Where to write the files.", file_okay=False),
    ] = Path(".tally-tls"),
) -> None:
    """Make a local certificate authority and a certificate for localhost,
    127.0.0.1 and ::1 signed by it, for ``tally serve --tls-cert --tls-key``.

    For development only: trust ca.pem in your client (curl --cacert), never in a
    system store you browse with; the CA's key is not written anywhere."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="Tally development CA")
    leaf = authority.issue_cert("localhost", "127.0.0.1", "::1")
    paths = {name: directory / name for name in ("ca.pem", "cert.pem", "key.pem")}
    authority.cert_pem.write_to_path(str(paths["ca.pem"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert.pem"]))
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["cert.pem"]), append=True)
    # The key is written to a file only its owner can read.
    key = paths["key.pem"]
    key.touch(mode=0o600, exist_ok=True)
    key.chmod(0o600)
    leaf.private_key_pem.write_to_path(str(key))
    typer.echo(f"CA:          {paths['ca.pem']}")
    typer.echo(f"certificate: {paths['cert.pem']} (localhost, 127.0.0.1, ::1)")
    typer.echo(f"key:         {key}")
    typer.echo(
        f"tally serve --tls-cert {paths['cert.pem']} --tls-key {key}; "
        f"curl --cacert {paths['ca.pem']} https://localhost:8000/healthz"
    )


__all__ = ["dev_cert", "log_config", "serve"]
