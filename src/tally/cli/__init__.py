"""The command line: ``tally serve``, ``tally migrate``, ``tally tenants create|list``,
``tally api-keys list|revoke``, ``tally audit verify|head``, ``tally signing-keys
rotate``, ``tally --version``."""

from tally.cli.admin import app


def main() -> None:
    app()


__all__ = ["app", "main"]
