"""The command line: ``tally serve``, ``tally migrate``, ``tally tenants create|list``,
``tally api-keys list|revoke``, ``tally audit verify|head``, ``tally signing-keys
rotate``, ``tally --version``."""

from typing import Any


def main() -> None:
    from tally.cli.admin import app

    app()


def __getattr__(name: str) -> Any:
    # Lazily: ``python -m tally.cli.serving`` (the server process) must not import
    # the command line's dependencies through this package.
    if name == "app":
        from tally.cli.admin import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
