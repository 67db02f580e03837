"""Labs on a real ledger: a throwaway SQLite file (``synchronous=FULL``), the
whole request path in process (the app ``tally serve`` runs, driven over ASGI
by the Python client), nothing faked.

- ``double_submit``: the same transfer sent twice at once, as a double click
  does, without and with an ``Idempotency-Key``.
- ``batching``: many clients sending single transfers, with the writer forced
  to one transaction per transfer, then batching what waits (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tally.api import create_app
from tally.client import AsyncClient
from tally.config import Settings
from tally.identity.tenants import create_tenant
from tally.lab import tables
from tally.ledger.writer import WRITER_BATCH_COMMANDS
from tally.storage import make_store
from tally.storage.schema import migrate
from tally.support.clock import wall_clock_us

BASE_URL = "http://lab"
LIFESPAN_SECONDS = 30
UNLIMITED = 1e9


@dataclass
class Lab:
    http: httpx.AsyncClient
    api_key: str

    def client(self) -> AsyncClient:
        return AsyncClient(api_key=self.api_key, http=self.http)

    def post(self, path: str, body: dict[str, Any], key: str | None) -> Any:
        headers = {"authorization": f"Bearer {self.api_key}"}
        if key is not None:
            headers["idempotency-key"] = key
        return self.http.post(path, json=body, headers=headers)


async def _tenant(settings: Settings) -> str:
    store = make_store(settings)
    await store.open()
    try:
        _, api_key = await create_tenant(store, "lab", wall_clock_us())
        return api_key
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def ledger(directory: Path, **settings: Any) -> AsyncIterator[Lab]:
    """A migrated ledger with one tenant, served in process until the block ends."""
    config = Settings(
        database_url=f"sqlite:///{directory / 'lab.db'}",
        rate_limit_per_second=UNLIMITED,
        rate_limit_burst=int(UNLIMITED),
        **settings,
    )
    migrate(config)
    api_key = await _tenant(config)
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        yield Lab(http, api_key)


async def _accounts(lab: Lab, *ids: str) -> None:
    async with lab.client() as c:
        for account in ids:
            await c.accounts.create("USD", id=account)


# -- a double click ------------------------------------------------------------------


@dataclass(frozen=True)
class DoubleSubmit:
    case: str
    statuses: tuple[int, ...]
    transfers: int


async def _double(lab: Lab, key: str | None, account: str) -> tuple[int, ...]:
    body = {"debit_account_id": "shop", "credit_account_id": account, "amount": 500}
    answers = await asyncio.gather(*(lab.post("/v1/transfers", body, key) for _ in range(2)))
    return tuple(a.status_code for a in answers)


async def double_submit() -> list[DoubleSubmit]:
    with tempfile.TemporaryDirectory(prefix="tally-lab-") as directory:
        async with ledger(Path(directory)) as lab:
            await _accounts(lab, "shop", "without", "with")
            results = []
            for case, key in (("without", None), ("with", "order-1234")):
                statuses = await _double(lab, key, case)
                async with lab.client() as c:
                    count = len([t async for t in c.transfers.iterate(account_id=case)])
                label = f"{case} Idempotency-Key"
                results.append(DoubleSubmit(label, statuses, count))
            return results


def double_submit_table(results: list[DoubleSubmit]) -> str:
    headers = ["two identical POST /v1/transfers at once", "statuses", "transfers made"]
    rows = [[r.case, " ".join(str(s) for s in r.statuses), r.transfers] for r in results]
    return tables.render(headers, rows)


# -- group commit --------------------------------------------------------------------


@dataclass(frozen=True)
class Batching:
    case: str
    transfers: int
    seconds: float
    commits: int

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds

    @property
    def per_commit(self) -> float:
        return self.transfers / max(1, self.commits)


def _commits() -> int:
    """Writer transactions committed so far in this process."""
    for metric in WRITER_BATCH_COMMANDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                return int(sample.value)
    return 0


async def _send_many(lab: Lab, transfers: int, clients: int) -> None:
    gate = asyncio.Semaphore(clients)
    async with lab.client() as c:

        async def one(n: int) -> None:
            async with gate:
                await c.transfers.create("from", "to", 1 + n % 100)

        await asyncio.gather(*(one(n) for n in range(transfers)))


async def batching(transfers: int, clients: int) -> list[Batching]:
    results = []
    cases = (("one transaction per transfer", 1), ("batching writer (group commit)", 2000))
    for case, batch_max in cases:
        with tempfile.TemporaryDirectory(prefix="tally-lab-") as directory:
            async with ledger(Path(directory), writer_batch_commands_max=batch_max) as lab:
                await _accounts(lab, "from", "to")
                before = _commits()
                started = time.perf_counter()
                await _send_many(lab, transfers, clients)
                seconds = time.perf_counter() - started
                results.append(Batching(case, transfers, seconds, _commits() - before))
    return results


def batching_table(results: list[Batching], clients: int) -> str:
    headers = [f"{clients} clients, SQLite synchronous=FULL", "transfers", "seconds"]
    headers += ["transfers/s", "commits", "transfers/commit"]
    rows = [
        [r.case, r.transfers, r.seconds, r.per_second, r.commits, r.per_commit] for r in results
    ]
    return tables.render(headers, rows)
