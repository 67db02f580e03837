"""gRPC end to end: ``tally serve --grpc-port`` and a client generated from
proto/tally/v1/ledger.proto, on SQLite and PostgreSQL.

The whole ledger flow, the client-streaming batch, the event stream and its
resume, health and reflection, and the contract's refusals as gRPC statuses
(with the code in google.rpc.ErrorInfo), all against one real server per backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tally.grpc.v1 import ledger_pb2 as pb
from tally.grpc.v1 import ledger_pb2_grpc as pb_grpc
from tests.conftest import create_tenant
from tests.e2e.conftest import Server, free_port, tally_server

CALL_TIMEOUT_SECONDS = 10.0


class Grpc:
    """A server's two ports and a tenant's key: a stub, and its credentials."""

    def __init__(self, server: Server, grpc_port: int, api_key: str) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = pb_grpc.LedgerStub(self.channel)
        self.api_key = api_key

    def auth(self, key: str | None = None, **extra: str) -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {key or self.api_key}")]
        return metadata + [(k.replace("_", "-"), v) for k, v in extra.items()]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int, str]]:
    """One ``tally serve --grpc-port`` per backend for the module (starting one costs
    seconds), each test in a tenant of its own."""
    tmp = tmp_path_factory.mktemp("grpc")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'grpc.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    grpc_port = free_port()
    with tally_server(url, tmp / "serve.log", grpc_port=str(grpc_port)) as server:
        yield server, grpc_port, url


@pytest.fixture
def g(served: tuple[Server, int, str]) -> Iterator[Grpc]:
    server, grpc_port, url = served
    _, api_key = create_tenant(url, "grpc")  # in process: a CLI run per test costs a second
    client = Grpc(server, grpc_port, api_key)
    try:
        yield client
    finally:
        client.channel.close()


def refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[object]]:
    """The status code, the contract's code (ErrorInfo.reason) and every detail."""
    status = rpc_status.from_call(error)
    assert status is not None, error
    details: list[object] = []
    reason = ""
    for packed in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
                if isinstance(detail, error_details_pb2.ErrorInfo):
                    reason = detail.reason
    return error.code(), reason, details


def refused(call: object, request: object, metadata: list[tuple[str, str]]) -> tuple[
    grpc.StatusCode, str, list[object]
]:  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)  # type: ignore[operator]
    return refusal(caught.value)  # type: ignore[arg-type]


def accounts(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    s.CreateAccount(pb.CreateAccountRequest(id="cash", currency="USD", normal_balance="debit"),
                    metadata=md)  # fmt: skip
    flags = pb.AccountFlags(debits_must_not_exceed_credits=True)
    s.CreateAccount(pb.CreateAccountRequest(id="alice", currency="USD", flags=flags), metadata=md)


def test_the_whole_ledger_flow_over_grpc(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    accounts(g)
    made = s.CreateTransfer(
        pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=1000),
        metadata=md,
    )
    assert made.status == "posted" and made.id.startswith("trf_") and made.amount == 1000
    assert s.GetTransfer(pb.GetTransferRequest(id=made.id), metadata=md) == made
    hold = s.CreateTransfer(
        pb.CreateTransferRequest(
            id="hold-1", debit_account_id="alice", credit_account_id="cash", amount=300,
            pending=True, timeout_seconds=3600, metadata={"order": "42"},
        ),
        metadata=md,
    )  # fmt: skip
    assert hold.status == "pending" and hold.timeout_seconds == 3600 and hold.HasField("expires_at")
    alice = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=md)
    assert (alice.balance.posted, alice.balance.available) == (1000, 700)
    posted = s.PostTransfer(pb.PostTransferRequest(pending_id="hold-1", amount=200), metadata=md)
    assert posted.pending_id == "hold-1" and posted.amount == 200
    s.CreateTransfer(
        pb.CreateTransferRequest(id="hold-2", debit_account_id="alice", credit_account_id="cash",
                                 amount=50, pending=True),
        metadata=md,
    )  # fmt: skip
    voided = s.VoidTransfer(pb.VoidTransferRequest(pending_id="hold-2"), metadata=md)
    assert voided.status == "voided" and voided.pending_id == "hold-2"
    assert s.GetTransfer(pb.GetTransferRequest(id="hold-1"), metadata=md).status == "posted"
    alice = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=md)
    assert (alice.balance.posted, alice.balance.pending, alice.balance.available) == (800, 0, 800)
    # REST reads what gRPC wrote: one ledger.
    rest = httpx.get(
        f"{g.server.base_url}/v1/accounts/alice", headers={"authorization": f"Bearer {g.api_key}"}
    )
    assert rest.json()["balance"]["posted"] == 800


def test_create_transfers_streams_items_through_the_batching_writer(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    accounts(g)
    count = 2_500  # three batches of the writer

    def items() -> Iterator[pb.CreateTransferRequest]:
        for i in range(count):
            if i == 7:  # more than alice has by then
                yield pb.CreateTransferRequest(
                    id="s-7", debit_account_id="alice", credit_account_id="cash", amount=100
                )
                continue
            yield pb.CreateTransferRequest(
                id=f"s-{i}", debit_account_id="cash", credit_account_id="alice", amount=2
            )

    response = s.CreateTransfers(items(), metadata=md, timeout=60)
    results = response.results
    assert [r.index for r in results] == list(range(count))
    # Item 7 debits alice more than has reached her: it alone fails.
    assert results[7].status == "failed" and results[7].error.code == "exceeds_credits"
    assert sum(r.status == "created" for r in results) == count - 1
    assert results[2_499].transfer.id == "s-2499"
    alice = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=md)
    assert alice.credits_posted == 2 * (count - 1)
    # Sent again (ids are the permanent idempotency layer): every item that was
    # written exists and moves nothing; item 7, which alice can now afford, runs.
    again = s.CreateTransfers(items(), metadata=md, timeout=60)
    assert sum(r.status == "exists" for r in again.results) == count - 1
    assert again.results[7].status == "created"
    after = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=md)
    assert (after.credits_posted, after.debits_posted) == (alice.credits_posted, 100)


def test_a_bad_item_refuses_the_stream_before_anything_is_written(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    accounts(g)
    good = pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=5)
    bad = pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=0)
    code, reason, details = refused(s.CreateTransfers, iter([good, bad]), md)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "validation_error")
    (bad_request,) = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
    assert bad_request.field_violations[0].field == "items[1].amount"
    assert s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=md).credits_posted == 0


def test_events_stream_live_and_resume_after_a_sequence(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    accounts(g)  # events 1 and 2
    stream = s.StreamEvents(pb.StreamEventsRequest(after=0), metadata=md, timeout=20)
    first = [next(stream), next(stream)]
    assert [(e.sequence, e.type) for e in first] == [(1, "account.created"), (2, "account.created")]
    transfer = pb.CreateTransferRequest(
        debit_account_id="cash", credit_account_id="alice", amount=9
    )
    made = s.CreateTransfer(transfer, metadata=md)
    live = next(stream)  # committed after the stream opened
    assert (live.sequence, live.type) == (3, "transfer.created")
    assert json.loads(live.data)["id"] == made.id
    stream.cancel()
    s.CreateTransfer(transfer, metadata=md)  # event 4, while nobody listens
    resumed = s.StreamEvents(
        pb.StreamEventsRequest(after=live.sequence, types=["transfer.created"]),
        metadata=md,
        timeout=20,
    )
    assert next(resumed).sequence == 4  # no gap, no duplicate
    resumed.cancel()


def test_health_and_reflection_answer(served: tuple[Server, int, str]) -> None:
    _, grpc_port, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tally.v1.Ledger"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = iter(
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="tally.v1.Ledger"),
            ]
        )
        listed, described = list(reflect.ServerReflectionInfo(asks, timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"tally.v1.Ledger", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # the .proto, served


def test_refusals_are_grpc_statuses_with_the_contract_code(g: Grpc) -> None:
    s, md = g.stub, g.auth()
    accounts(g)
    get = pb.GetAccountRequest(id="alice")
    assert refused(s.GetAccount, get, [])[:2] == (
        grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"
    )  # fmt: skip
    assert refused(s.GetAccount, get, g.auth("tly_wrong"))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"
    )  # fmt: skip
    reader = httpx.post(
        f"{g.server.base_url}/v1/api-keys",
        headers={"authorization": f"Bearer {g.api_key}"},
        json={"name": "reader", "scopes": ["accounts:read"]},
    ).json()["secret"]
    assert s.GetAccount(get, metadata=g.auth(reader)).id == "alice"
    write = pb.CreateTransferRequest(debit_account_id="alice", credit_account_id="cash", amount=1)
    assert refused(s.CreateTransfer, write, g.auth(reader))[:2] == (
        grpc.StatusCode.PERMISSION_DENIED, "forbidden"
    )  # fmt: skip
    assert refused(s.GetAccount, pb.GetAccountRequest(id="nobody"), md)[:2] == (
        grpc.StatusCode.NOT_FOUND, "not_found"
    )  # fmt: skip
    assert refused(s.CreateTransfer, write, md)[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "exceeds_credits"
    )  # fmt: skip
    other = pb.CreateAccountRequest(id="alice", currency="EUR")
    code, reason, details = refused(s.CreateAccount, other, md)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "exists_with_different_fields")
    (info,) = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info.domain == "tally" and "currency" in info.metadata["fields"]
    assert info.metadata["request_id"].startswith("req_")
    code, reason, details = refused(s.CreateAccount, pb.CreateAccountRequest(currency="usd"), md)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "validation_error")
    assert any(isinstance(d, error_details_pb2.BadRequest) for d in details)
    missing = pb.PostTransferRequest(pending_id="no-such-hold")
    assert refused(s.PostTransfer, missing, md)[:2] == (
        grpc.StatusCode.NOT_FOUND, "pending_transfer_not_found"
    )  # fmt: skip


def test_an_idempotency_key_replays_the_first_answer_and_runs_once(g: Grpc) -> None:
    s = g.stub
    accounts(g)
    keyed = g.auth(idempotency_key="pay-7")
    request = pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=7)
    first, call = s.CreateTransfer.with_call(request, metadata=keyed)
    again, replay = s.CreateTransfer.with_call(request, metadata=keyed)
    assert again == first  # the same transfer, server-chosen id included
    assert ("idempotent-replayed", "true") in replay.trailing_metadata()
    assert ("idempotent-replayed", "true") not in call.trailing_metadata()
    alice = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=g.auth())
    assert alice.credits_posted == 7
    changed = pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=8)
    assert refused(s.CreateTransfer, changed, keyed)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_reused"
    )  # fmt: skip
    assert refused(s.CreateTransfer, request, g.auth(idempotency_key="k" * 256))[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key_invalid"
    )  # fmt: skip


def test_a_keyed_stream_is_one_batch_stored_and_replayed_whole(g: Grpc) -> None:
    s = g.stub
    accounts(g)
    keyed = g.auth(idempotency_key="import-1")
    items = [
        pb.CreateTransferRequest(debit_account_id="cash", credit_account_id="alice", amount=3)
        for _ in range(5)
    ]
    first = s.CreateTransfers(iter(items), metadata=keyed)
    again, replay = s.CreateTransfers.with_call(iter(items), metadata=keyed)
    assert again == first  # server-chosen ids included: nothing ran twice
    assert ("idempotent-replayed", "true") in replay.trailing_metadata()
    alice = s.GetAccount(pb.GetAccountRequest(id="alice"), metadata=g.auth())
    assert alice.credits_posted == 15
    too_many = iter(items * 201)  # 1,005 items: more than one batch
    assert refused(s.CreateTransfers, too_many, keyed)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "validation_error"
    )  # fmt: skip


def test_stopping_the_server_finishes_calls_in_flight_and_ends_streams_cleanly(
    tmp_path: Path,
) -> None:
    """SIGTERM while an event stream is open and a CreateTransfers call is half
    sent: the stream ends with OK at once, the call finishes (its items written),
    and the process exits within the grace (TALLY_GRPC_SHUTDOWN_GRACE_SECONDS)."""
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    grpc_port = free_port()
    grace_seconds = 3.0
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            tally_server(
                url,
                tmp_path / "serve.log",
                options=("--grpc-port", str(grpc_port)),  # the operator's way to turn it on
                grpc_shutdown_grace_seconds=str(grace_seconds),
            )
        )
        _, api_key = create_tenant(url, "stop")
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        stub = pb_grpc.LedgerStub(channel)
        md = [("authorization", f"Bearer {api_key}")]
        for name in ("a", "b"):
            stub.CreateAccount(pb.CreateAccountRequest(id=name, currency="USD"), metadata=md)
        stream = stub.StreamEvents(pb.StreamEventsRequest(after=0), metadata=md, timeout=30)
        assert next(stream).sequence == 1
        signalled = threading.Event()

        def items() -> Iterator[pb.CreateTransferRequest]:
            yield pb.CreateTransferRequest(debit_account_id="a", credit_account_id="b", amount=1)
            signalled.wait(10)
            time.sleep(0.3)  # the server is stopping by now
            yield pb.CreateTransferRequest(debit_account_id="a", credit_account_id="b", amount=2)

        batch = stub.CreateTransfers.future(items(), metadata=md, timeout=30)
        time.sleep(0.3)  # the call is in flight: its first item read
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        signalled.set()
        response = batch.result()
        assert [r.status for r in response.results] == ["created", "created"]
        assert [e.sequence for e in stream] == [2]  # what was left, then the end
        assert stream.code() == grpc.StatusCode.OK
        server.process.wait(timeout=grace_seconds + 5)
        assert time.monotonic() - started < grace_seconds + 2
    log = server.log_text()
    assert "Traceback" not in log, log
