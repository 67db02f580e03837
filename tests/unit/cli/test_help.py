"""The ``tally`` command's help, in-process (tests/e2e/test_cli.py runs the real
command): every command's help shows no type placeholder for a flag, and
``serve`` shows the defaults that apply when no option is given."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import tally
from tally.cli import app
from tally.config import Settings

COMMANDS = [
    (),
    ("serve",),
    ("dev-cert",),
    ("migrate",),
    ("tenants",),
    ("tenants", "create"),
    ("tenants", "list"),
    ("api-keys",),
    ("api-keys", "list"),
    ("api-keys", "revoke"),
    ("audit",),
    ("audit", "verify"),
    ("audit", "head"),
    ("signing-keys",),
    ("signing-keys", "rotate"),
    ("login",),
    ("logout",),
    ("accounts",),
    ("accounts", "create"),
    ("accounts", "list"),
    ("accounts", "show"),
    ("transfers",),
    ("transfers", "create"),
    ("transfers", "post"),
    ("transfers", "void"),
    ("transfers", "list"),
    ("events",),
    ("events", "tail"),
    ("import",),
    ("export",),
    ("lab",),
    ("lab", "connections"),
    ("lab", "double-submit"),
    ("lab", "batching"),
    ("lab", "hashing"),
]


def help_of(*command: str) -> str:
    done = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert done.exit_code == 0, done.output
    return done.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tally")
def test_help_has_no_type_placeholder_for_a_flag(command: tuple[str, ...]) -> None:
    text = help_of(*command)
    assert "<bool>" not in text, text
    assert "Usage: " in text


def test_serve_help_shows_the_real_defaults_of_host_port_and_workers() -> None:
    text = help_of("serve")
    defaults = Settings.model_fields
    for name, metavar in (("host", "ADDRESS"), ("port", "PORT"), ("workers", "N")):
        assert f"--{name} {metavar}" in text, text
        assert f"[default: {defaults[name].default}, or TALLY_{name.upper()} when set]" in text
    assert "None" not in text


def test_the_top_level_help_lists_the_operator_commands() -> None:
    text = help_of()
    for command in ("serve", "migrate", "tenants", "api-keys", "audit", "signing-keys"):
        assert f"  {command} " in text, text
    assert "--version" in text


def test_version_prints_the_package_version() -> None:
    done = CliRunner().invoke(app, ["--version"])
    assert (done.exit_code, done.output) == (0, f"tally {tally.__version__}\n")
