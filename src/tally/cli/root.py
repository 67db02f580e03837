"""The ``tally`` command's root: its help, ``--version``, and what every
command shares (``--json`` output).

The server's commands (``tally.cli.admin``) and the client's
(``tally.cli.ledger``) both hang off this one ``app``. It imports nothing of
the server, so ``pip install tally`` alone runs the client's commands.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from tally import __version__


def typer_app(help: str) -> typer.Typer:
    """Help is plain text (``rich_markup_mode=None``): the rich panels label every
    flag ``<bool>``, which reads as a value to type."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


# A traceback never prints local variables: they hold API keys and passwords.
app = typer.Typer(
    help="Tally, a double-entry ledger service.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)
AS_JSON = typer.Option("--json", help="Print one JSON object per line and nothing else.")


def emit(row: dict[str, Any], as_json: bool, text: str) -> None:
    sys.stdout.write((json.dumps(row) if as_json else text) + "\n")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tally {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Tally, a double-entry ledger service."""
