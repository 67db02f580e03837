"""The ``tally`` command.

- For people calling a server (``pip install tally``): ``login``, ``logout``,
  ``accounts``, ``transfers``, ``events tail``, ``import``, ``export``
  (``tally.cli.ledger``, ``tally.cli.files``), over HTTP with ``tally.client``.
- For the operator of the server (``pip install 'tally[server]'``): ``serve``,
  ``migrate``, ``tenants``, ``api-keys``, ``audit``, ``signing-keys``
  (``tally.cli.admin``). Without the server's dependencies, ``serve`` and
  ``migrate`` say what to install instead of failing on an import.
"""

from __future__ import annotations

import typer

from tally.cli import files, ledger
from tally.cli.root import app

SERVER_MISSING = "this command runs the server, which needs: pip install 'tally[server]'"

try:
    from tally.cli import admin
except ModuleNotFoundError as exc:  # only the client is installed
    if exc.name is None or exc.name.split(".")[0] == "tally":
        raise  # a bug in Tally, not a missing dependency
    missing = exc.name

    def _needs_server() -> None:
        typer.echo(f"{SERVER_MISSING} (missing: {missing})", err=True)
        raise typer.Exit(2)

    for name in ("serve", "migrate"):
        app.command(name, help=f"Needs tally[server]. {SERVER_MISSING}")(_needs_server)
    admin = None  # type: ignore[assignment]


def main() -> None:
    app()


__all__ = ["admin", "app", "files", "ledger", "main"]
