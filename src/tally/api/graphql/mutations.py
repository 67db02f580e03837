"""The mutation root: the REST writes, over the same ledger service and answers.

A mutation builds its request exactly as REST does: its input becomes the REST
request's JSON and is decoded by the same Struct (``api.schemas.ledger``), so
every limit and every field error is REST's. It hands the ledger REST's own
``answer`` function, so the writer stores the same response with the effect
when the request carries an ``Idempotency-Key`` (api.md §3); a replay returns
that stored response, which this module turns back into the GraphQL object, or
into the same refusal. A refusal carries the contract's code in
``extensions.code``. Every mutation is recorded in the audit log, as
``graphql:<field>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields, is_dataclass
from typing import Any

import msgspec
import strawberry
from strawberry.types.unset import UnsetType

from tally.api.answers import answer_account, answer_batch, answer_transfer
from tally.api.graphql.queries import object_id
from tally.api.graphql.scalars import Int64, Metadata
from tally.api.graphql.types import Account, Info, Transfer
from tally.api.parsing import decode
from tally.api.problems import status_of
from tally.api.routes.transfers import batch_command
from tally.api.schemas.ledger import (
    AccountCreate,
    BatchCreate,
    BatchOut,
    PendingPost,
    PendingVoid,
    TransferCreate,
    TransferOut,
)
from tally.audit import AuditContext
from tally.errors import FieldError, TallyError
from tally.ledger import WriteContext, Written, commands
from tally.ledger.public import AccountOut
from tally.storage.records import StoredResponse

UNSET: Any = strawberry.UNSET


@strawberry.input
class AccountFlagsInput:
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


@strawberry.input(description="As the body of POST /v1/accounts.")
class CreateAccountInput:
    currency: str
    id: str | None = UNSET
    normal_balance: str | None = strawberry.field(default=UNSET, description="credit or debit.")
    flags: AccountFlagsInput | None = UNSET
    metadata: Metadata | None = UNSET


@strawberry.input(description="As the body of POST /v1/transfers.")
class CreateTransferInput:
    debit_account_id: str
    credit_account_id: str
    amount: Int64
    id: str | None = UNSET
    currency: str | None = UNSET
    pending: bool | None = UNSET
    timeout_seconds: int | None = UNSET
    metadata: Metadata | None = UNSET


@strawberry.input(description="As the body of POST /v1/transfers/{id}/post.")
class PostTransferInput:
    id: str | None = UNSET
    amount: Int64 | None = UNSET
    metadata: Metadata | None = UNSET


@strawberry.input(description="As the body of POST /v1/transfers/{id}/void.")
class VoidTransferInput:
    id: str | None = UNSET
    metadata: Metadata | None = UNSET


@strawberry.input(description="A transfer request, or a post or void of a pending transfer.")
class BatchItemInput:
    debit_account_id: str | None = UNSET
    credit_account_id: str | None = UNSET
    amount: Int64 | None = UNSET
    id: str | None = UNSET
    currency: str | None = UNSET
    pending: bool | None = UNSET
    timeout_seconds: int | None = UNSET
    metadata: Metadata | None = UNSET
    pending_id: str | None = UNSET
    action: str | None = strawberry.field(default=UNSET, description="post or void.")


@strawberry.input(description="As the body of POST /v1/transfers/batch.")
class TransferBatchInput:
    transfers: list[BatchItemInput]
    atomic: bool = False


@strawberry.type
class BatchItemError:
    code: str
    detail: str


@strawberry.type
class BatchItemResult:
    index: int
    status: str = strawberry.field(description="created, exists or failed.")
    transfer: Transfer | None
    error: BatchItemError | None


@strawberry.type
class TransferBatchResult:
    results: list[BatchItemResult]


class StoredRefusal(TallyError):
    """A refusal the ledger answered (and, with a key, stored): raised again as
    the GraphQL error of the mutation, with the same code, detail and fields."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "")))
        self.code = str(problem.get("code", "internal_error"))
        self.fields = tuple(problem.get("fields") or ())
        self.errors = [FieldError(**e) for e in problem.get("errors") or ()]
        self.results: list[Any] | None = problem.get("results")


def _plain(value: Any) -> Any:
    """An input object as the REST request's JSON: the fields the client gave."""
    if is_dataclass(value) and not isinstance(value, type):
        given = ((f.name, getattr(value, f.name)) for f in fields(value))
        return {name: _plain(v) for name, v in given if not isinstance(v, UnsetType)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _request(value: Any, schema: type[Any]) -> Any:
    return decode(msgspec.json.encode(_plain(value) if value is not None else {}), schema)


def _answered(stored: StoredResponse, out: type[Any]) -> Any:
    if stored.status < 300:
        return msgspec.json.decode(stored.body, type=out)
    raise StoredRefusal(msgspec.json.decode(stored.body))


Run = Callable[[WriteContext], Awaitable[Written]]


async def _write(info: Info, scope: str, action: str, run: Run, answer: Any) -> StoredResponse:
    """Authorize, run and audit one mutation; its stored (or replayed) answer."""
    ctx = info.context
    services = ctx.services
    p = ctx.principal
    audit = AuditContext(
        f"graphql:{action}", ctx.request_id, ctx.client_address, p.tenant_id, p.actor_type,
        p.actor_id,
    )  # fmt: skip
    try:
        ctx.require(scope)
        written = await run(WriteContext(answer=answer, claim=ctx.claim, audit=audit))
    except TallyError as error:
        if not audit.recorded:
            row = audit.row(status_of(error), error.code, services.clock())
            await services.audit_appender.append(row)
        raise
    assert written.answer is not None, "a mutation is audited, so always answered"
    if written.replayed:
        ctx.replayed = True
        row = audit.row(written.answer.status, "idempotent_replayed", services.clock())
        await services.audit_appender.append(row)
    return written.answer


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create an account (scope accounts:write).")
    async def create_account(self, info: Info, input: CreateAccountInput) -> Account:
        ctx = info.context

        async def run(wctx: WriteContext) -> Written:
            body: AccountCreate = _request(input, AccountCreate)
            command = commands.create_account(
                id=body.id,
                currency=body.currency,
                normal_balance=body.normal_balance,
                debits_must_not_exceed_credits=body.flags.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits=body.flags.credits_must_not_exceed_debits,
                metadata=body.metadata,
            )
            return await ctx.services.ledger.create_account(ctx.tenant_id, command, wctx)

        answer = answer_account(ctx.request_id)
        stored = await _write(info, "accounts:write", "createAccount", run, answer)
        return Account.from_out(_answered(stored, AccountOut))

    @strawberry.mutation(description="Create a transfer (scope transfers:write).")
    async def create_transfer(self, info: Info, input: CreateTransferInput) -> Transfer:
        ctx = info.context

        async def run(wctx: WriteContext) -> Written:
            body: TransferCreate = _request(input, TransferCreate)
            command = commands.create_transfer(
                id=body.id,
                debit_account_id=body.debit_account_id,
                credit_account_id=body.credit_account_id,
                amount=body.amount,
                currency=body.currency,
                pending=body.pending,
                timeout_seconds=body.timeout_seconds,
                metadata=body.metadata,
            )
            return await ctx.services.ledger.create_transfer(ctx.tenant_id, command, wctx)

        answer = answer_transfer(ctx.request_id)
        stored = await _write(info, "transfers:write", "createTransfer", run, answer)
        return Transfer.from_out(_answered(stored, TransferOut))

    @strawberry.mutation(description="Post a pending transfer (scope transfers:write).")
    async def post_transfer(
        self, info: Info, id: str, input: PostTransferInput | None = None
    ) -> Transfer:
        ctx = info.context

        async def run(wctx: WriteContext) -> Written:
            body: PendingPost = _request(input, PendingPost)
            command = commands.post_pending(
                object_id(id), id=body.id, amount=body.amount, metadata=body.metadata
            )
            return await ctx.services.ledger.post_pending(ctx.tenant_id, command, wctx)

        answer = answer_transfer(ctx.request_id)
        stored = await _write(info, "transfers:write", "postTransfer", run, answer)
        return Transfer.from_out(_answered(stored, TransferOut))

    @strawberry.mutation(description="Void a pending transfer (scope transfers:write).")
    async def void_transfer(
        self, info: Info, id: str, input: VoidTransferInput | None = None
    ) -> Transfer:
        ctx = info.context

        async def run(wctx: WriteContext) -> Written:
            body: PendingVoid = _request(input, PendingVoid)
            command = commands.void_pending(object_id(id), id=body.id, metadata=body.metadata)
            return await ctx.services.ledger.void_pending(ctx.tenant_id, command, wctx)

        answer = answer_transfer(ctx.request_id)
        stored = await _write(info, "transfers:write", "voidTransfer", run, answer)
        return Transfer.from_out(_answered(stored, TransferOut))

    @strawberry.mutation(
        description="Up to 1000 transfers, posts and voids in order; atomic: all or none "
        "(scope transfers:write). A failed atomic batch is the error batch_failed, with "
        "each item's result in extensions.results."
    )
    async def create_transfer_batch(
        self, info: Info, input: TransferBatchInput
    ) -> TransferBatchResult:
        ctx = info.context
        atomic = bool(input.atomic)

        async def run(wctx: WriteContext) -> Written:
            body: BatchCreate = _request(input, BatchCreate)
            items = [batch_command(raw, i) for i, raw in enumerate(body.transfers)]
            ledger = ctx.services.ledger
            return await ledger.create_batch(ctx.tenant_id, items, atomic=body.atomic, ctx=wctx)

        answer = answer_batch(ctx.request_id, atomic)
        stored = await _write(info, "transfers:write", "createTransferBatch", run, answer)
        out: BatchOut = _answered(stored, BatchOut)
        return TransferBatchResult(
            results=[
                BatchItemResult(
                    index=r.index,
                    status=r.status,
                    transfer=None if r.transfer is None else Transfer.from_out(r.transfer),
                    error=None
                    if r.error is None
                    else BatchItemError(code=r.error.code, detail=r.error.detail),
                )
                for r in out.results
            ]
        )
