"""The ``tally`` command.

- For people calling a server (``pip install tally``): ``login``, ``logout``,
  ``accounts``, ``transfers``, ``events tail``, ``import``, ``export``
  (``tally.cli.ledger``, ``tally.cli.files``), over HTTP with ``tally.client``.
- For the operator of the server (``pip install 'tally[server]'``): ``serve``,
  ``migrate``, ``tenants``, ``api-keys``, ``audit``, ``signing-keys``, ``lab``
  (``tally.cli.admin``). Without the server's dependencies, ``serve`` and
  ``migrate`` say what to install instead of failing on an import.

Everything is imported on first use (``app``, ``main``): ``python -m
tally.cli.serving`` (the server process) must not import the command line's
dependencies through this package (docs/events.md, C10k).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

SERVER_MISSING = "this command runs the server, which needs: pip install 'tally[server]'"


@functools.cache
def build() -> typer.Typer:
    """The root command with every command this installation can run."""
    import typer

    from tally.cli import files, ledger  # noqa: F401  (they register their commands)
    from tally.cli.root import app

    try:
        from tally.cli import admin  # noqa: F401
    except ModuleNotFoundError as exc:  # only the client is installed
        if exc.name is None or exc.name.split(".")[0] == "tally":
            raise  # a bug in Tally, not a missing dependency
        missing = exc.name

        def _needs_server() -> None:
            typer.echo(f"{SERVER_MISSING} (missing: {missing})", err=True)
            raise typer.Exit(2)

        for name in ("serve", "migrate"):
            app.command(name, help=f"Needs tally[server]. {SERVER_MISSING}")(_needs_server)
    return app


def main() -> None:
    build()()


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(f"module 'tally.cli' has no attribute {name!r}")


__all__ = ["app", "build", "main"]
