"""Services on the real databases, with no HTTP: what every entry point calls.

``run_services`` builds the process's ``Services`` for a database, starts them
(the writer, the background rounds), runs a scenario and stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tally.audit import AuditContext
from tally.config import Settings
from tally.services import Services
from tests.conftest import FakeClock

T = TypeVar("T")


def run_services(
    database_url: str,
    scenario: Callable[[Services], Awaitable[T]],
    *,
    clock: FakeClock | None = None,
) -> T:
    async def main() -> T:
        services = Services(Settings(database_url=database_url), clock=clock or FakeClock())
        await services.start()
        try:
            return await scenario(services)
        finally:
            await services.stop()

    return asyncio.run(main())


def audit_context(action: str) -> AuditContext:
    """What an entry point records about a request: here, a test's."""
    return AuditContext(action, request_id=None, client_address="127.0.0.1")
