"""The command line: ``tally serve``, ``tally migrate``, ``tally tenants create``,
``tally audit verify|head``, ``tally signing-keys rotate``."""

from tally.cli.admin import app


def main() -> None:
    app()


__all__ = ["app", "main"]
