"""The HTTP entry point: parse, authenticate, call the service, render.

``create_app`` is imported on first use (PEP 562), not with the package: the
Python client (``tally.client``) shares this package's schemas
(``tally.api.schemas``) and must import them without the server's
dependencies (Starlette, asyncpg, …) installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tally.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tally.api.app import create_app

        return create_app
    raise AttributeError(f"module 'tally.api' has no attribute {name!r}")
