"""The gRPC server in process, on the real database: the limits REST has, as
gRPC statuses (the rate limit, a required idempotency key)."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tally.config import Settings
from tally.grpc.server import GrpcServer
from tally.grpc.v1 import ledger_pb2 as pb
from tally.grpc.v1 import ledger_pb2_grpc as pb_grpc
from tally.services import Services
from tests.conftest import FakeClock, create_tenant


def _serve_and_call(settings: Settings, api_key: str, calls: int) -> list[grpc.aio.AioRpcError]:
    """Make ``calls`` CreateAccount calls; the refusals, in order."""

    async def main() -> list[grpc.aio.AioRpcError]:
        services = Services(settings, clock=FakeClock())
        await services.start()
        server = GrpcServer(services, "127.0.0.1", 0)  # a port the OS picks
        await server.start()
        refusals = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.LedgerStub(channel)
                md = [("authorization", f"Bearer {api_key}")]
                for _ in range(calls):
                    try:
                        await stub.CreateAccount(
                            pb.CreateAccountRequest(currency="USD"), metadata=md, timeout=10
                        )
                    except grpc.aio.AioRpcError as error:
                        refusals.append(error)
        finally:
            await server.stop()
            await services.stop()
        return refusals

    return asyncio.run(main())


def test_a_caller_over_its_rate_limit_is_told_when_to_retry(sqlite_url: str) -> None:
    _, api_key = create_tenant(sqlite_url)
    settings = Settings(database_url=sqlite_url, rate_limit_per_second=0.1, rate_limit_burst=2)
    (refused,) = _serve_and_call(settings, api_key, 3)
    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused)
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == "rate_limited"
    assert status.details[1].Unpack(retry) and retry.retry_delay.seconds >= 1


def test_a_write_without_a_key_is_refused_where_keys_are_required(sqlite_url: str) -> None:
    _, api_key = create_tenant(sqlite_url)
    settings = Settings(database_url=sqlite_url, require_idempotency_key=True)
    (refused,) = _serve_and_call(settings, api_key, 1)
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.trailing_metadata())["tally-code"] == "idempotency_key_required"
