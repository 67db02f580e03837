"""The transfer routes of api.md §4: single, two-phase and batched."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from tally.api.answers import answer_batch, answer_transfer, list_response, written_response
from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import query_choice, query_text, query_time
from tally.api.responses import json_response
from tally.api.routes.params import CURSOR, ID, LIMIT, READ_ERRORS, TIME, WRITE_ERRORS
from tally.api.routes.params import query_text as text_param
from tally.api.schemas.ledger import (
    BatchCreate,
    BatchItem,
    BatchOut,
    PendingPost,
    PendingVoid,
    TransferCreate,
    TransferList,
    TransferOut,
)
from tally.core import CreateTransfer, PostPending, VoidPending
from tally.errors import FieldError, ValidationFailed
from tally.ledger import commands
from tally.ledger.public import transfer_out
from tally.storage import TransferFilter

routes = RouteTable(tag="Transfers")


@routes.route(
    "POST", "/v1/transfers", "createTransfer", "Create a transfer",
    scope="transfers:write", success={201: TransferOut, 200: TransferOut},
    request=TransferCreate, errors=(*WRITE_ERRORS, 409),
)  # fmt: skip
async def create_transfer(call: Call) -> Response:
    body: TransferCreate = await call.body(TransferCreate)
    ctx = call.write_context(answer_transfer(call.request_id))
    return written_response(
        await call.services.ledger.create_transfer(call.tenant_id, transfer_command(body), ctx)
    )


def transfer_command(body: TransferCreate) -> CreateTransfer:
    """The command of a transfer request (REST's body, a gRPC message's fields)."""
    return commands.create_transfer(
        id=body.id,
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        currency=body.currency,
        pending=body.pending,
        timeout_seconds=body.timeout_seconds,
        metadata=body.metadata,
    )


@routes.route(
    "POST", "/v1/transfers/batch", "createTransferBatch",
    "Create up to 1000 transfers, posts and voids in order",
    scope="transfers:write", success={200: BatchOut, 201: BatchOut},
    request=BatchCreate, errors=WRITE_ERRORS,
)  # fmt: skip
async def create_batch(call: Call) -> Response:
    body: BatchCreate = await call.body(BatchCreate)
    items = [batch_command(raw, i) for i, raw in enumerate(body.transfers)]
    ctx = call.write_context(answer_batch(call.request_id, body.atomic))
    written = await call.services.ledger.create_batch(
        call.tenant_id, items, atomic=body.atomic, ctx=ctx
    )
    return written_response(written)


@routes.route(
    "GET", "/v1/transfers", "listTransfers", "List transfers",
    scope="transfers:read", success={200: TransferList}, errors=READ_ERRORS,
    params=(
        LIMIT,
        CURSOR,
        Param("account_id", "query", text_param(64)),
        Param(
            "status",
            "query",
            {"type": "string", "enum": ["posted", "pending", "voided", "expired"]},
        ),
        Param("created_after", "query", TIME),
        Param("created_before", "query", TIME),
        Param("order", "query", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}),
    ),
)  # fmt: skip
async def list_transfers(call: Call) -> Response:
    r = call.request
    f = TransferFilter(
        account_id=query_text(r, "account_id"),
        status=query_choice(r, "status", ("posted", "pending", "voided", "expired")),
        created_after_us=query_time(r, "created_after"),
        created_before_us=query_time(r, "created_before"),
        descending=query_choice(r, "order", ("asc", "desc")) == "desc",
    )
    page = await call.services.ledger.list_transfers(
        call.tenant_id, f, limit=call.limit(), cursor=query_text(r, "cursor", 128)
    )
    return list_response(page, transfer_out, TransferList)


@routes.route(
    "GET", "/v1/transfers/{id}", "getTransfer", "Retrieve a transfer",
    scope="transfers:read", success={200: TransferOut}, errors=(*READ_ERRORS, 404), params=(ID,),
)  # fmt: skip
async def get_transfer(call: Call) -> Response:
    transfer = await call.services.ledger.get_transfer(call.tenant_id, call.path_id())
    etag = f'"{transfer.sequence}-{transfer.status.value}"'
    return json_response(transfer_out(transfer), headers=(("etag", etag),))


@routes.route(
    "POST", "/v1/transfers/{id}/post", "postTransfer", "Post a pending transfer",
    scope="transfers:write", success={201: TransferOut, 200: TransferOut},
    request=PendingPost, errors=(*WRITE_ERRORS, 404, 409), params=(ID,),
)  # fmt: skip
async def post_transfer(call: Call) -> Response:
    pending_id = call.path_id()
    body: PendingPost = await call.body(PendingPost, empty_ok=True)
    command = post_command(pending_id, body)
    ctx = call.write_context(answer_transfer(call.request_id))
    return written_response(await call.services.ledger.post_pending(call.tenant_id, command, ctx))


def post_command(pending_id: str, body: PendingPost) -> PostPending:
    return commands.post_pending(pending_id, id=body.id, amount=body.amount, metadata=body.metadata)


@routes.route(
    "POST", "/v1/transfers/{id}/void", "voidTransfer", "Void a pending transfer",
    scope="transfers:write", success={201: TransferOut, 200: TransferOut},
    request=PendingVoid, errors=(*WRITE_ERRORS, 404, 409), params=(ID,),
)  # fmt: skip
async def void_transfer(call: Call) -> Response:
    pending_id = call.path_id()
    body: PendingVoid = await call.body(PendingVoid, empty_ok=True)
    command = void_command(pending_id, body)
    ctx = call.write_context(answer_transfer(call.request_id))
    return written_response(await call.services.ledger.void_pending(call.tenant_id, command, ctx))


def void_command(pending_id: str, body: PendingVoid) -> VoidPending:
    return commands.void_pending(pending_id, id=body.id, metadata=body.metadata)


# -- batch items --------------------------------------------------------------------------

_TRANSFER_ONLY = ("debit_account_id", "credit_account_id", "currency", "pending", "timeout_seconds")


def _given(value: object) -> bool:
    return value is not None and value is not msgspec.UNSET


def batch_command(item: BatchItem, index: int) -> CreateTransfer | PostPending | VoidPending:
    """Exactly one of the two shapes, or a 422 naming ``transfers[index].field``."""
    if _given(item.pending_id) or _given(item.action):
        return _action_command(item, index)
    debit, credit, amount = item.debit_account_id, item.credit_account_id, item.amount
    if debit is msgspec.UNSET or credit is msgspec.UNSET or amount is None:
        name = next(
            n
            for n in ("debit_account_id", "credit_account_id", "amount")
            if not _given(getattr(item, n))
        )
        raise _refused(index, name, "required", f"A transfer needs {name}.")
    return commands.create_transfer(
        id=item.id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        currency=item.currency,
        pending=item.pending is True,
        timeout_seconds=item.timeout_seconds,
        metadata=item.metadata,
    )


def _action_command(item: BatchItem, index: int) -> PostPending | VoidPending:
    for name in _TRANSFER_ONLY:
        if _given(getattr(item, name)):
            message = "A post or void action takes no such field."
            raise _refused(index, name, "unknown_field", message)
    if item.pending_id is msgspec.UNSET:
        raise _refused(index, "pending_id", "required", "An action needs pending_id.")
    if item.action is msgspec.UNSET:
        raise _refused(index, "action", "required", "An item with pending_id needs an action.")
    if item.action == "void":
        if item.amount is not None:
            raise _refused(index, "amount", "invalid", "A void takes no amount.")
        return commands.void_pending(item.pending_id, id=item.id, metadata=item.metadata)
    return commands.post_pending(
        item.pending_id, id=item.id, amount=item.amount, metadata=item.metadata
    )


def _refused(index: int, name: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed([FieldError(f"transfers[{index}].{name}", code, message)])
