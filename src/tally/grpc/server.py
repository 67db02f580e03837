"""The gRPC server: ``tally.v1.Ledger``, server reflection and the standard health
service, on its own port, in the HTTP app's process and event loop.

It shares the process's ``Services`` with the HTTP app (one batching writer, one
event hub, one pool), which is why it lives there rather than in a process of its
own: on SQLite the database has one writer and the hub is woken by it, so a
second process would neither batch with REST's writes nor see its events live
(grpc.aio runs on uvloop, measured in tests/e2e/test_grpc.py). The HTTP app's
lifespan starts it after the services and stops it before them
(``api.app.create_app``'s ``companions``).

Stopping: the health service turns NOT_SERVING, new calls are refused, every
event stream ends with OK at once (the hub closes them), and calls in flight get
``TALLY_GRPC_SHUTDOWN_GRACE_SECONDS`` to finish before they are cancelled; queued
writes then drain with the writer, as for HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tally.grpc.service import SERVICE, LedgerService
from tally.grpc.v1 import ledger_pb2_grpc as pb_grpc
from tally.services import Services

log = logging.getLogger(__name__)

# The largest message a client may send: a transfer is well under 1 KiB, its
# metadata at most 50 x 576 bytes of text.
RECEIVE_MESSAGE_BYTES_MAX = 256 * 1024
# Pings on idle connections (an event stream can be quiet for long): proxies and
# NATs keep them open, and a client gone without a word is found.
KEEPALIVE_SECONDS = 30
KEEPALIVE_TIMEOUT_SECONDS = 10


class GrpcServer:
    def __init__(self, services: Services, host: str, port: int) -> None:
        s = services.settings
        self._services = services
        self._grace_seconds = s.grpc_shutdown_grace_seconds
        self._server = grpc.aio.server(
            maximum_concurrent_rpcs=s.grpc_concurrent_calls_max,
            options=[
                ("grpc.max_receive_message_length", RECEIVE_MESSAGE_BYTES_MAX),
                ("grpc.keepalive_time_ms", KEEPALIVE_SECONDS * 1000),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_SECONDS * 1000),
                # Several worker processes serve one port, as they do the HTTP one.
                ("grpc.so_reuseport", 1),
            ],
        )
        pb_grpc.add_LedgerServicer_to_server(LedgerService(services), self._server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self._server,
        )  # fmt: skip
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)

    async def start(self) -> None:
        await self._server.start()
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC serving tally.v1.Ledger on port %d", self.port)

    async def stop(self) -> None:
        """Refuse new calls, end the streams, let calls in flight finish (bounded)."""
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self._server.stop(self._grace_seconds))
        await asyncio.sleep(0)  # the server refuses new calls from here on
        self._services.events.close_all()
        await stopping


@contextlib.asynccontextmanager
async def grpc_companion(services: Services) -> AsyncIterator[None]:
    """The gRPC server for the HTTP app's lifespan (tally.cli.serving adds it
    when TALLY_GRPC_PORT is set)."""
    port = services.settings.grpc_port
    assert port is not None, "grpc_companion needs TALLY_GRPC_PORT"
    server = GrpcServer(services, services.settings.grpc_host, port)
    await server.start()
    try:
        yield
    finally:
        await server.stop()
