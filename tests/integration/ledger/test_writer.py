"""The batching writer against the real stores: bounded, batching, failing safe."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from tally.api import create_app
from tally.api.problems import status_of
from tally.config import Settings
from tally.core import CreateAccount, CreateTransfer, Outcome, Status
from tally.errors import Unavailable
from tally.ledger.transaction import Job, JobResult, execute
from tally.ledger.writer import Writer
from tally.storage import make_store
from tally.storage.unit_of_work import Steps, T
from tests.conftest import create_tenant


class CountingStore:
    """The real store, counting its write transactions (a spy, not a stand-in)."""

    def __init__(self, database_url: str) -> None:
        self.inner = make_store(Settings(database_url=database_url))
        self.transactions = 0

    async def transact(self, steps: Steps[T]) -> T:
        self.transactions += 1
        return await self.inner.transact(steps)

    async def settle_writer(self) -> None:
        await self.inner.settle_writer()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_requests_waiting_together_share_one_transaction(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[int, list[JobResult]]:
        store = CountingStore(database_url)
        await store.inner.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100)  # type: ignore[arg-type]
        # Queue 50 requests before the writer runs: they must commit together.
        pending = [
            asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount(f"w{i}", "USD")]))
            for i in range(50)
        ]
        await asyncio.sleep(0)
        writer.start()
        results = await asyncio.gather(*pending)
        await writer.stop()
        await store.inner.close()
        return store.transactions, results

    transactions, results = run(scenario())  # type: ignore[misc]
    assert transactions == 1
    assert all(result.outcomes[0].status is Status.CREATED for result in results)


def test_a_client_that_hangs_up_does_not_cancel_its_queued_write(database_url: str) -> None:
    """A request whose task is cancelled (its client hung up) while its command
    waits in the queue: the write is carried all the same, its outcome simply not
    delivered, and the requests beside it are answered."""
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[Outcome, bool]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        writer = Writer(store, queue_commands_max=10, batch_commands_max=10)
        gone = asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount("hung", "USD")]))
        stays = asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount("kept", "USD")]))
        await asyncio.sleep(0)
        gone.cancel()
        writer.start()
        (outcome,) = (await stays).outcomes
        await writer.stop()
        found = await store.get_account(tenant_id, "hung") is not None
        await store.close()
        return outcome, found

    outcome, found = run(scenario())  # type: ignore[misc]
    assert outcome.status is Status.CREATED
    assert found


def test_a_full_queue_refuses_with_unavailable_and_loses_nothing_queued(
    database_url: str,
) -> None:
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[Outcome, Unavailable]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        writer = Writer(store, queue_commands_max=1, batch_commands_max=10)
        first = asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount("q1", "USD")]))
        await asyncio.sleep(0)
        with pytest.raises(Unavailable) as refused:
            await writer.submit(tenant_id, [CreateAccount("q2", "USD")])
        writer.start()
        (outcome,) = (await first).outcomes
        await writer.stop()
        await store.close()
        return outcome, refused.value

    outcome, refused = run(scenario())  # type: ignore[misc]
    assert outcome.status is Status.CREATED
    assert status_of(refused) == 503
    assert refused.retry_after_seconds == 1


def test_the_queue_gauge_reads_the_commands_waiting_when_scraped(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)

    def scraped() -> float | None:
        return REGISTRY.get_sample_value("tally_writer_queue_commands")

    async def scenario() -> tuple[float | None, float | None]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100)
        writer.start()
        pending = [
            asyncio.ensure_future(writer.submit(tenant_id, [CreateAccount(f"g{i}", "USD")]))
            for i in range(3)
        ]
        await asyncio.sleep(0)  # queued; the writer has not taken them yet
        waiting = scraped()
        await asyncio.gather(*pending)
        done = scraped()
        await writer.stop()
        await store.close()
        return waiting, done

    assert run(scenario()) == (3.0, 0.0)


def test_a_full_queue_is_a_503_with_retry_after_over_http(database_url: str) -> None:
    _, api_key = create_tenant(database_url)
    settings = Settings(database_url=database_url, writer_queue_commands_max=1)
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/v1/transfers/batch",
            json={
                "transfers": [
                    {"debit_account_id": "a", "credit_account_id": "b", "amount": 1},
                    {"debit_account_id": "a", "credit_account_id": "b", "amount": 1},
                ]
            },
            headers={"Authorization": f"Bearer {api_key}"},
        )
    assert r.status_code == 503
    assert r.json()["code"] == "unavailable"
    assert r.headers["retry-after"] == "1"


def test_an_unreachable_database_is_a_503_with_retry_after_never_a_500() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        write = client.post(
            "/v1/accounts",
            json={"currency": "USD"},
            headers={"Authorization": "Bearer tly_aaaaaaaaaaaaaaaa_secret"},
        )
        assert client.get("/healthz").status_code == 200
    for r in (ready, write):
        assert r.status_code == 503
        assert r.json()["code"] == "unavailable"
        assert int(r.headers["retry-after"]) >= 1


def _commits(query: str) -> bool:
    """Whether the writer's query ends the transaction: its COMMIT alone, or sent
    with the batch's last write (storage.postgres._write_and_commit)."""
    return query.startswith("COMMIT") or "; COMMIT" in query


@pytest.mark.parametrize("commit", ["with the write", "alone"])
def test_a_commit_whose_answer_is_lost_is_a_503_that_does_not_claim_nothing_changed(
    postgres_url: str, commit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the bank test (PostgreSQL crashed with pg_ctl -m immediate): a 503
    # said "nothing was changed" for writes whose COMMIT had reached the WAL.
    # Here the commit happens and then its answer is lost, as in such a crash.
    from tally.storage import postgres as pg

    tenant_id, _ = create_tenant(postgres_url)
    execute_ = asyncpg.connection.Connection.execute
    if commit == "alone":  # no write is small enough to go with it
        monkeypatch.setattr(pg, "COMMIT_WITH_WRITE_CHARS_MAX", -1)

    async def commit_then_lose_the_answer(
        self: asyncpg.connection.Connection, query: str, *args: object, **kwargs: object
    ) -> str:
        status: str = await execute_(self, query, *args, **kwargs)
        if _commits(query):
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the connection was closed")
        return status

    async def scenario() -> tuple[Unavailable, object]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            with monkeypatch.context() as patch:
                patch.setattr(asyncpg.connection.Connection, "execute", commit_then_lose_the_answer)
                job = Job(tenant_id, [CreateAccount("lost", "USD")])
                with pytest.raises(Unavailable) as lost:
                    await execute(store, [job], 0, retry_after_seconds=1)
            return lost.value, await store.get_account(tenant_id, "lost")
        finally:
            await store.close()

    error, account = run(scenario())  # type: ignore[misc]
    assert account is not None  # it did commit
    assert status_of(error) == 503 and error.retry_after_seconds is not None
    assert "nothing was changed" not in error.detail
    assert "Idempotency-Key" in error.detail


def test_an_accounts_changes_never_go_back_in_time(database_url: str) -> None:
    """A batch whose clock reads earlier than an account's last change (another
    process read its clock first and committed first, or the clock stepped back)
    is dated at that change: an account's history, read in (time, version) order,
    stays in version order, and ?at= agrees with it."""
    tenant_id, _ = create_tenant(database_url)

    async def scenario() -> tuple[list[int], list[int], int]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        try:
            opening = [CreateAccount("a", "USD"), CreateAccount("b", "USD")]
            await execute(store, [Job(tenant_id, opening)], 1_000, retry_after_seconds=1)
            for i, now_us in enumerate((5_000, 3_000, 4_000)):
                job = Job(tenant_id, [CreateTransfer(f"t{i}", "a", "b", 1)])
                [result] = await execute(store, [job], now_us, retry_after_seconds=1)
                assert result.outcomes[0].status is Status.CREATED
            history = await store.list_balances(tenant_id, "a", before=None, limit=10)
            times = [(await store.get_transfer(tenant_id, f"t{i}")).created_at_us for i in range(3)]  # type: ignore[union-attr]
            at = await store.balance_at(tenant_id, "a", 5_000)
            assert at is not None
            return [r.version for r in history], times, at.version
        finally:
            await store.close()

    versions, times, at_version = run(scenario())  # type: ignore[misc]
    assert times == [5_000, 5_000, 5_000]
    assert versions == [4, 3, 2]  # 1 is the account's creation, which has no record
    assert at_version == 4


def test_one_tenants_clock_trouble_does_not_date_another_tenants_transfers(
    database_url: str,
) -> None:
    """The batch time is held back per tenant: an account of tenant A changed an
    hour "in the future" dates A's transfers then, not B's in the same batch."""
    tenants = [create_tenant(database_url)[0] for _ in range(2)]
    hour_us = 3_600_000_000

    async def scenario() -> tuple[int, int]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        try:
            for tenant_id in tenants:
                opening = Job(tenant_id, [CreateAccount("a", "USD"), CreateAccount("b", "USD")])
                await execute(store, [opening], 1_000, retry_after_seconds=1)
            future = Job(tenants[0], [CreateTransfer("skewed", "a", "b", 1)])
            await execute(store, [future], 1_000 + hour_us, retry_after_seconds=1)
            both = [Job(t, [CreateTransfer("now", "a", "b", 1)]) for t in tenants]
            await execute(store, both, 2_000, retry_after_seconds=1)
            a = await store.get_transfer(tenants[0], "now")
            b = await store.get_transfer(tenants[1], "now")
            assert a is not None
            assert b is not None
            return a.created_at_us, b.created_at_us
        finally:
            await store.close()

    a_time, b_time = run(scenario())  # type: ignore[misc]
    assert (a_time, b_time) == (1_000 + hour_us, 2_000)


def test_a_commit_opens_the_next_transaction_which_holds_nothing_back_and_ends_when_idle(
    postgres_url: str,
) -> None:
    """PostgreSQL: the writer's COMMIT also sends the next batch's BEGIN (a round
    trip fewer per batch). The session waits "idle in transaction" without a
    transaction id or a snapshot, so it holds back no vacuum and no audit seal,
    and the writer ends it after ``idle_seconds`` with nothing to write."""
    tenant_id, _ = create_tenant(postgres_url)
    activity = "SELECT state, backend_xid, backend_xmin FROM pg_stat_activity WHERE pid = $1"

    async def scenario() -> list[tuple[object, ...]]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        watcher = await asyncpg.connect(postgres_url)
        # Idle for 3 s before the writer ends the transaction: a pause of the loaded
        # machine between the two batches must not end it early.
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100, idle_seconds=3)
        writer.start()
        try:
            seen = []
            queries: list[str] = []
            for i in range(2):  # the second batch runs in the transaction the first opened
                await writer.submit(tenant_id, [CreateAccount(f"ahead{i}", "USD")])
                conn = store._writer_conn  # type: ignore[attr-defined]
                pid = conn.get_server_pid()
                seen.append(tuple(await watcher.fetchrow(activity, pid)))
                if i == 0:
                    conn.add_query_logger(lambda logged: queries.append(logged.query))
            # The second batch sent no BEGIN of its own, and its COMMIT, sent with
            # its write, opened the next.
            assert not [q for q in queries if q.startswith("BEGIN")], queries
            assert queries[-1].startswith("EXECUTE tally_write_"), queries
            assert queries[-1].endswith("; COMMIT; BEGIN ISOLATION LEVEL READ COMMITTED"), queries
            for _ in range(100):  # ends after idle_seconds; waits at most 10 s
                state = tuple(await watcher.fetchrow(activity, pid))
                if state[0] == "idle":
                    break
                await asyncio.sleep(0.1)
            seen.append(state)
            assert await store.get_account(tenant_id, "ahead1") is not None
            return seen
        finally:
            await writer.stop()
            await watcher.close()
            await store.close()

    seen = run(scenario())
    assert seen == [
        ("idle in transaction", None, None),
        ("idle in transaction", None, None),
        ("idle", None, None),
    ]


def test_a_failed_batch_rolls_back_and_the_next_begins_afresh(postgres_url: str) -> None:
    tenant_id, _ = create_tenant(postgres_url)

    async def scenario() -> list[Status]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        statuses = []
        try:
            for account_id in ("one", "two", "three"):
                if account_id == "two":
                    conn = store._writer_conn  # type: ignore[attr-defined]
                    assert conn.is_in_transaction()  # opened ahead by the last commit
                    # Break that transaction: the batch must still commit.
                    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                        await conn.execute("SELECT 1 / 0")
                job = Job(tenant_id, [CreateAccount(account_id, "USD")])
                (result,) = await execute(store, [job], 0, retry_after_seconds=1)
                statuses.append(result.outcomes[0].status)
            return statuses
        finally:
            await store.close()

    assert run(scenario()) == [Status.CREATED] * 3


@pytest.mark.parametrize("how", ["error", "cancelled"])
def test_a_batch_cut_short_after_its_write_leaves_nothing_for_the_next_commit(
    postgres_url: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer now sends BEGIN and COMMIT itself: a batch that fails (a bug) or
    is cancelled after a write statement sent without the COMMIT (a write too
    large to go with it, or another tenant's before it) must be rolled back,
    never carried into the next batch's commit."""
    from tally.storage import postgres as pg

    tenant_id, _ = create_tenant(postgres_url)
    monkeypatch.setattr(pg, "COMMIT_WITH_WRITE_CHARS_MAX", -1)
    execute_ = asyncpg.connection.Connection.execute

    async def write_then_fail(
        self: asyncpg.connection.Connection, query: str, *args: object, **kwargs: object
    ) -> str:
        status: str = await execute_(self, query, *args, **kwargs)
        if query.startswith("WITH seq AS"):  # the write statement (pg._write_sql)
            if how == "error":
                raise RuntimeError("a bug after the write")
            await asyncio.sleep(60)  # cancelled here
        return status

    async def scenario() -> tuple[object, object]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            await execute(store, [Job(tenant_id, [CreateAccount("first", "USD")])], 0,
                          retry_after_seconds=1)  # fmt: skip
            with monkeypatch.context() as patch:
                patch.setattr(asyncpg.connection.Connection, "execute", write_then_fail)
                ghost = Job(tenant_id, [CreateAccount("ghost", "USD")])
                cut = asyncio.ensure_future(execute(store, [ghost], 0, retry_after_seconds=1))
                if how == "cancelled":
                    await asyncio.sleep(0.3)
                    cut.cancel()
                with pytest.raises((RuntimeError, asyncio.CancelledError)):
                    await cut
            await execute(store, [Job(tenant_id, [CreateAccount("after", "USD")])], 0,
                          retry_after_seconds=1)  # fmt: skip
            return (
                await store.get_account(tenant_id, "ghost"),
                await store.get_account(tenant_id, "after"),
            )
        finally:
            await store.close()

    ghost, after = run(scenario())  # type: ignore[misc]
    assert ghost is None
    assert after is not None


def test_a_writer_session_killed_while_idle_is_made_afresh(postgres_url: str) -> None:
    tenant_id, _ = create_tenant(postgres_url)

    async def scenario() -> object:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        other = await asyncpg.connect(postgres_url)
        try:
            await execute(store, [Job(tenant_id, [CreateAccount("one", "USD")])], 0,
                          retry_after_seconds=1)  # fmt: skip
            pid = store._writer_conn.get_server_pid()  # type: ignore[attr-defined]
            await other.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep(0.2)
            await store.settle_writer()  # never raises
            await execute(store, [Job(tenant_id, [CreateAccount("two", "USD")])], 0,
                          retry_after_seconds=1)  # fmt: skip
            return await store.get_account(tenant_id, "two")
        finally:
            await other.close()
            await store.close()

    assert run(scenario()) is not None


def test_a_small_batch_sends_its_last_write_with_its_commit_and_a_large_one_apart(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: while a batch's last write statement has small values, it goes
    in one message with the COMMIT (one round trip for both, decisions/0010),
    its values written as constants that PostgreSQL reads back exactly: here
    metadata made of everything that could end or escape a string constant.
    Past COMMIT_WITH_WRITE_CHARS_MAX the write goes with bound parameters and
    the COMMIT after it, as before."""
    from tally.storage import postgres as pg

    tenant_id, _ = create_tenant(postgres_url)
    hostile = {
        "quotes": "it's '' ''' \"both\"",
        "backslashes": "\\ \\\\ \\' \\n \\x41 \\u0041 E'\\'",
        "dollars": "$$ $t$ $tally_write_1$ $1 $2",
        "sql": "'); DROP TABLE accounts; --",
        "text": "naïve café 日本 \U0001f600\t\r\n",
    }

    async def scenario() -> tuple[list[str], list[str], object, object]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            warm = Job(tenant_id, [CreateAccount("warm", "USD")])
            await execute(store, [warm], 0, retry_after_seconds=1)
            queries: list[str] = []
            store._writer_conn.add_query_logger(  # type: ignore[attr-defined]
                lambda logged: queries.append(logged.query)
            )
            small = Job(tenant_id, [CreateAccount("small", "USD", metadata=hostile)])
            await execute(store, [small], 0, retry_after_seconds=1)
            await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon, not at once
            with_write = list(queries)
            queries.clear()
            monkeypatch.setattr(pg, "COMMIT_WITH_WRITE_CHARS_MAX", 100)
            large = Job(tenant_id, [CreateAccount("large", "USD", metadata=hostile)])
            await execute(store, [large], 0, retry_after_seconds=1)
            await asyncio.sleep(0.05)
            return (
                with_write,
                list(queries),
                await store.get_account(tenant_id, "small"),
                await store.get_account(tenant_id, "large"),
            )
        finally:
            await store.close()

    with_write, apart, small, large = run(scenario())  # type: ignore[misc]
    assert with_write[-1].startswith("EXECUTE tally_write_"), with_write
    assert with_write[-1].endswith("; COMMIT; " + "BEGIN ISOLATION LEVEL READ COMMITTED")
    assert not [q for q in with_write if q.startswith("WITH seq AS")], with_write
    assert [q for q in apart if q.startswith("WITH seq AS")], apart
    assert apart[-1] == "COMMIT; BEGIN ISOLATION LEVEL READ COMMITTED", apart
    assert small is not None and small.metadata == hostile  # type: ignore[attr-defined]
    assert large is not None and large.metadata == hostile  # type: ignore[attr-defined]


def test_an_error_in_the_message_with_the_commit_rolls_the_whole_batch_back(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error PostgreSQL reports for the last write ends the message there: its
    COMMIT never runs, and the batch is rolled back whole, the write of another
    tenant sent before it included; the next batch commits on the same
    connection."""
    from tally.storage import postgres as pg

    first, _ = create_tenant(postgres_url)
    last, _ = create_tenant(postgres_url)
    first, last = sorted((first, last))  # a batch writes its tenants in id order
    tenant_write = pg.PostgresStore._tenant_write

    def failing_for_the_last(
        self: pg.PostgresStore, w: object, now_us: int, known: tuple[str, str] | None = None
    ) -> tuple[str, tuple[str | int, ...]] | None:
        found = tenant_write(self, w, now_us, known)  # type: ignore[arg-type]
        if found is not None and w.tenant_id == last:  # type: ignore[attr-defined]
            return "SELECT 1 / $2::int WHERE $1::text IS NOT NULL", (last, 0)
        return found

    async def scenario() -> tuple[object, object, object, bool]:
        store = make_store(Settings(database_url=postgres_url))
        await store.open()
        try:
            both = [
                Job(first, [CreateAccount("lost-first", "USD")]),
                Job(last, [CreateAccount("lost-last", "USD")]),
            ]
            with monkeypatch.context() as patch:
                patch.setattr(pg.PostgresStore, "_tenant_write", failing_for_the_last)
                with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                    await execute(store, both, 0, retry_after_seconds=1)
            conn = store._writer_conn  # type: ignore[attr-defined]
            in_failed_transaction = conn.is_in_transaction()
            after = Job(last, [CreateAccount("after", "USD")])
            await execute(store, [after], 0, retry_after_seconds=1)
            return (
                await store.get_account(first, "lost-first"),
                await store.get_account(last, "lost-last"),
                await store.get_account(last, "after"),
                in_failed_transaction,
            )
        finally:
            await store.close()

    lost_first, lost_last, after, in_failed_transaction = run(scenario())  # type: ignore[misc]
    assert lost_first is None and lost_last is None
    assert not in_failed_transaction  # rolled back at once, not left for the next batch
    assert after is not None
