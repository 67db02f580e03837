"""``tally.v1.Ledger``: each method parses, calls one ledger service, renders.

Around every call the steps of REST's ``endpoint``: admit the caller
(``Services.admit``: credential, rate limit), check the scope, read the
idempotency key, then render any error as a gRPC status (``status``), record a
write in the audit log and measure the call. The handlers build REST's commands
from REST's request Structs and answer with REST's answers (``messages`` says
why), so no ledger rule is written here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from prometheus_client import Counter, Histogram

from tally.api.answers import answer_account, answer_batch, answer_transfer
from tally.api.endpoint import UNEXPECTED, require_scope
from tally.api.parsing import idempotency_key
from tally.api.problems import STATUS as HTTP_STATUS
from tally.api.routes.accounts import account_command
from tally.api.routes.transfers import post_command, transfer_command, void_command
from tally.api.schemas.ledger import AccountCreate, PendingPost, PendingVoid, TransferCreate
from tally.audit import AuditContext
from tally.core import CreateTransfer
from tally.errors import (
    FieldError,
    IdempotencyKeyRequired,
    NotFound,
    TallyError,
    ValidationFailed,
)
from tally.grpc import messages as m
from tally.grpc.events import stream_events
from tally.grpc.status import STATUS, Refusal, grpc_status
from tally.grpc.v1 import ledger_pb2 as pb
from tally.grpc.v1 import ledger_pb2_grpc as pb_grpc
from tally.identity import Principal
from tally.ledger import WriteContext, Written
from tally.ledger.idempotency import Claim, fingerprint
from tally.ledger.public import account_out, transfer_out
from tally.ledger.transaction import Answer
from tally.services import Services
from tally.storage.records import StoredResponse
from tally.support.ids import is_valid_id, new_id

log = logging.getLogger(__name__)

SERVICE = "tally.v1.Ledger"
# A CreateTransfers call writes its transfers in batches of at most this many (the
# REST batch's limit), and takes at most this many in all: its answer, one result
# per transfer, stays within gRPC's default 4 MiB message.
BATCH_TRANSFERS_MAX = 1_000
STREAM_TRANSFERS_MAX = 10_000

CALLS = Counter("tally_grpc_calls", "gRPC calls served.", ("method", "code"))
CALL_SECONDS = Histogram(
    "tally_grpc_call_seconds",
    "Time to serve a gRPC call (a stream's whole life for StreamEvents).",
    ("method",),
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

R = TypeVar("R")


class _Refused(Exception):
    """A write answered with a refusal (decided in its transaction, perhaps stored)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


@dataclass(slots=True)
class Call:
    """One call's caller, key, audit row and the metadata it answers with."""

    services: Services
    context: grpc.aio.ServicerContext
    method: str
    request_id: str = field(default_factory=lambda: new_id("req"))
    principal_or_none: Principal | None = None
    audit: AuditContext | None = None
    key: str | None = None
    http_status: int = 200
    replayed: bool = False
    trailing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tenant_id(self) -> str:
        assert self.principal_or_none is not None, "an admitted call"
        return self.principal_or_none.tenant_id

    @property
    def principal(self) -> Principal:
        assert self.principal_or_none is not None, "an admitted call"
        return self.principal_or_none

    def write_context(self, answer: Answer, body: bytes, path: str = "") -> WriteContext:
        """As REST's: the answer rendered in the transaction; with a key, the claim,
        fingerprinted over this method (and path id) and the request's fields."""
        claim = None
        if self.key is not None:
            target = f"/{SERVICE}/{self.method}{path}"
            claim = Claim(self.key, fingerprint("POST", target, body))
        return WriteContext(answer=answer, claim=claim, audit=self.audit)

    def answered(self, written: Written) -> StoredResponse:
        """The write's answer, or ``_Refused`` with the refusal it holds."""
        stored = written.answer
        assert stored is not None, "gRPC writes are audited, so always answered"
        self.http_status = stored.status
        if written.replayed:
            self.replayed = True
            self.trailing.append(("idempotent-replayed", "true"))
        refusal = m.refusal_of(stored)
        if refusal is not None:
            raise _Refused(refusal)
        return stored


def _peer_address(peer: str | None) -> str | None:
    """``ipv4:127.0.0.1:50123`` or ``ipv6:[::1]:50123`` -> the address alone."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None


class LedgerService(pb_grpc.LedgerServicer):
    def __init__(self, services: Services) -> None:
        self._services = services
        self._seconds = {name: CALL_SECONDS.labels(name) for name in _METHODS}

    # -- the frame of every call -----------------------------------------------------

    async def _admit(self, call: Call, scope: str, *, write: bool) -> None:
        """Authenticate and rate-limit (Services.admit), check the scope, read the key."""
        authorization, keys = None, []
        for name, value in call.context.invocation_metadata() or ():
            if name == "authorization" and authorization is None:
                authorization = value
            elif name == "idempotency-key":
                keys.append(value)
        address = _peer_address(call.context.peer())
        if write:
            call.audit = AuditContext(_AUDIT_ACTIONS[call.method], call.request_id, address)
        principal, limits = await self._services.admit(authorization, address)
        call.principal_or_none = principal
        if call.audit is not None:
            call.audit.tenant_id = principal.tenant_id
            call.audit.actor_type, call.audit.actor_id = principal.actor_type, principal.actor_id
        call.trailing += [(k.lower(), v) for k, v in limits.items()]
        require_scope(principal, scope)
        if write:
            call.key = idempotency_key(keys)
            if call.key is None and self._services.settings.require_idempotency_key:
                raise IdempotencyKeyRequired("Send an idempotency-key in the call's metadata.")

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        scope: str,
        run: Callable[[Call], Awaitable[R]],
        *,
        write: bool = False,
    ) -> R:
        started = time.perf_counter()
        call = Call(self._services, context, method)
        call.trailing.append(("request-id", call.request_id))
        refusal: Refusal | None = None
        try:
            await self._admit(call, scope, write=write)
            reply = await run(call)
        except _Refused as refused:
            refusal = refused.refusal
        except grpc.aio.AbortError:
            raise  # the call was ended with its status already
        except TallyError as error:
            refusal = Refusal.of(error)
            if call.audit is not None:  # the audit row's status, in HTTP's terms
                call.http_status = HTTP_STATUS[error.code][0]
        except Exception:
            # A bug. The client learns only that, and the request id to report it by.
            log.exception("unhandled error in %s", method)
            refusal = Refusal("internal_error", UNEXPECTED)
            call.http_status = 500
        await self._audit(call, refusal)
        code = grpc.StatusCode.OK if refusal is None else STATUS[refusal.code]
        CALLS.labels(method, code.name).inc()
        self._seconds[method].observe(time.perf_counter() - started)
        if refusal is not None:
            status = grpc_status(refusal, call.request_id)
            metadata = (*status.trailing_metadata, *call.trailing)
            await context.abort(status.code, status.details, metadata)
        context.set_trailing_metadata(tuple(call.trailing))
        return reply

    async def _audit(self, call: Call, refusal: Refusal | None) -> None:
        """A write the writer did not record with its change (refused before it, or
        replayed) is recorded by the appender, as REST does."""
        ctx = call.audit
        if ctx is None or ctx.recorded:
            return
        code = "idempotent_replayed" if call.replayed else None
        if refusal is not None:
            code = refusal.code
        await self._services.audit_appender.append(
            ctx.row(call.http_status, code, self._services.clock())
        )

    # -- accounts ---------------------------------------------------------------------

    async def CreateAccount(
        self, request: pb.CreateAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.Account:
        async def run(call: Call) -> pb.Account:
            body = m.body_of(m.account_fields(request))
            command = account_command(m.parsed(body, AccountCreate))
            ctx = call.write_context(answer_account(call.request_id), body)
            written = await self._services.ledger.create_account(call.tenant_id, command, ctx)
            return m.account_message(call.answered(written))

        return await self._serve(context, "CreateAccount", "accounts:write", run, write=True)

    async def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.Account:
        async def run(call: Call) -> pb.Account:
            account_id = _object_id(request.id)
            account = await self._services.ledger.get_account(call.tenant_id, account_id)
            return m.account_pb(account_out(account))

        return await self._serve(context, "GetAccount", "accounts:read", run)

    # -- transfers --------------------------------------------------------------------

    async def CreateTransfer(
        self, request: pb.CreateTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.Transfer:
        async def run(call: Call) -> pb.Transfer:
            body = m.body_of(m.transfer_fields(request))
            command = transfer_command(m.parsed(body, TransferCreate))
            ctx = call.write_context(answer_transfer(call.request_id), body)
            written = await self._services.ledger.create_transfer(call.tenant_id, command, ctx)
            return m.transfer_message(call.answered(written))

        return await self._serve(context, "CreateTransfer", "transfers:write", run, write=True)

    async def GetTransfer(
        self, request: pb.GetTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.Transfer:
        async def run(call: Call) -> pb.Transfer:
            transfer_id = _object_id(request.id)
            transfer = await self._services.ledger.get_transfer(call.tenant_id, transfer_id)
            return m.transfer_pb(transfer_out(transfer))

        return await self._serve(context, "GetTransfer", "transfers:read", run)

    async def PostTransfer(
        self, request: pb.PostTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.Transfer:
        async def run(call: Call) -> pb.Transfer:
            pending_id = _object_id(request.pending_id)
            body = m.body_of(m.post_fields(request))
            command = post_command(pending_id, m.parsed(body, PendingPost))
            ctx = call.write_context(answer_transfer(call.request_id), body, f"/{pending_id}")
            written = await self._services.ledger.post_pending(call.tenant_id, command, ctx)
            return m.transfer_message(call.answered(written))

        return await self._serve(context, "PostTransfer", "transfers:write", run, write=True)

    async def VoidTransfer(
        self, request: pb.VoidTransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.Transfer:
        async def run(call: Call) -> pb.Transfer:
            pending_id = _object_id(request.pending_id)
            body = m.body_of(m.void_fields(request))
            command = void_command(pending_id, m.parsed(body, PendingVoid))
            ctx = call.write_context(answer_transfer(call.request_id), body, f"/{pending_id}")
            written = await self._services.ledger.void_pending(call.tenant_id, command, ctx)
            return m.transfer_message(call.answered(written))

        return await self._serve(context, "VoidTransfer", "transfers:write", run, write=True)

    async def CreateTransfers(
        self,
        request_iterator: AsyncIterator[pb.CreateTransferRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.CreateTransfersResponse:
        async def run(call: Call) -> pb.CreateTransfersResponse:
            return await self._create_transfers(call, request_iterator)

        return await self._serve(context, "CreateTransfers", "transfers:write", run, write=True)

    async def _create_transfers(
        self, call: Call, requests: AsyncIterator[pb.CreateTransferRequest]
    ) -> pb.CreateTransfersResponse:
        """Every item is read and checked before any is written: a bad one refuses the
        call (INVALID_ARGUMENT naming ``items[i]``) with nothing done, as a REST
        batch with a bad item is. Then batches of up to 1000 go to the writer at
        once, in order; each item succeeds or fails on its own (not atomic)."""
        commands: list[CreateTransfer] = []
        bodies: list[bytes] = []
        async for request in requests:
            index = len(commands)
            if index == STREAM_TRANSFERS_MAX:
                raise ValidationFailed([_too_many(STREAM_TRANSFERS_MAX, "per call")])
            body = m.body_of(m.transfer_fields(request))
            item = m.parsed(body, TransferCreate, prefix=f"items[{index}]")
            commands.append(transfer_command(item))
            bodies.append(body)
        if call.key is not None and len(commands) > BATCH_TRANSFERS_MAX:
            # One key, one stored answer: so one batch, one transaction.
            raise ValidationFailed([_too_many(BATCH_TRANSFERS_MAX, "with an idempotency-key")])
        services = self._services
        batches = [
            (start, commands[start : start + BATCH_TRANSFERS_MAX])
            for start in range(0, len(commands), BATCH_TRANSFERS_MAX)
        ]
        for _ in batches[1:]:  # a rate-limit token per batch, as REST's batch takes
            await services.limits.for_credential(call.principal.actor_type, call.principal.actor_id)
        body = b"[" + b",".join(bodies) + b"]"
        writes = [
            services.ledger.create_batch(
                call.tenant_id,
                batch,
                atomic=False,
                ctx=call.write_context(answer_batch(call.request_id, False), body),
            )
            for _, batch in batches
        ]
        done = await asyncio.gather(*writes, return_exceptions=True)
        response = pb.CreateTransfersResponse()
        for (start, _), written in zip(batches, done, strict=True):
            if isinstance(written, BaseException):
                raise written
            response.results.extend(m.batch_results(call.answered(written), start))
        return response

    # -- events -------------------------------------------------------------------------

    # grpc.aio lets a server-streaming method write with context.write and return,
    # instead of being an async generator: the pump calls the sink, not a yield.
    async def StreamEvents(  # type: ignore[override]
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        async def run(call: Call) -> None:
            await stream_events(self._services, call.tenant_id, request, context)

        await self._serve(context, "StreamEvents", "events:read", run)


_METHODS = (
    "CreateAccount",
    "GetAccount",
    "CreateTransfer",
    "GetTransfer",
    "PostTransfer",
    "VoidTransfer",
    "CreateTransfers",
    "StreamEvents",
)
# The audit log's action of each write: REST's operation id for the same use case.
_AUDIT_ACTIONS = {
    "CreateAccount": "createAccount",
    "CreateTransfer": "createTransfer",
    "PostTransfer": "postTransfer",
    "VoidTransfer": "voidTransfer",
    "CreateTransfers": "createTransferBatch",
}


def _object_id(value: str) -> str:
    if not is_valid_id(value):
        # No object can have such an id, so it is simply not there (REST's 404).
        raise NotFound(f"No object with id {value[:80]!r}: no id has that form.")
    return value


def _too_many(limit: int, where: str) -> FieldError:
    return FieldError(
        "items",
        "invalid_length",
        f"At most {limit} transfers {where}: send the rest in another call.",
    )


__all__ = ["SERVICE", "LedgerService"]
