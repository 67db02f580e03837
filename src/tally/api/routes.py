"""The REST routes of api.md §4, each described once for routing and for OpenAPI.

A route is a ``RouteSpec``: its method, path, schemas, status codes and the
handler. The router and the OpenAPI document are both built from the same list,
so the published contract cannot name a route, field or error that the server
does not have, or miss one it does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from tally.api.parsing import (
    decode,
    metadata_filters,
    query_choice,
    query_int,
    query_text,
    query_time,
    read_body,
)
from tally.api.problems import problem, problem_response, request_id_of, to_response
from tally.auth import Principal
from tally.core import Account, Code, Outcome, Status, Transfer, derive_balance
from tally.errors import (
    FieldError,
    Forbidden,
    IdempotencyKeyRequired,
    LedgerRefused,
    NotFound,
    PreconditionFailed,
    TallyError,
    ValidationFailed,
)
from tally.idempotency import Claim, StoredResponse, fingerprint, parse_key
from tally.ids import is_valid_id
from tally.schemas import (
    AccountCreate,
    AccountList,
    AccountOut,
    AccountUpdate,
    BalanceList,
    BalanceOut,
    BalanceSnapshotOut,
    BatchAction,
    BatchCreate,
    BatchItem,
    BatchOut,
    BatchResultOut,
    ErrorOut,
    EventList,
    EventOut,
    PendingPost,
    PendingVoid,
    TransferCreate,
    TransferList,
    TransferOut,
    account_out,
    encode,
    format_time,
    transfer_out,
)
from tally.service import Ledger, Page, Written
from tally.storage import TransferFilter
from tally.storage.base import BalanceRecord
from tally.storage.batch import Render

log = logging.getLogger(__name__)

REQUESTS = Counter("tally_http_requests", "HTTP requests served.", ("method", "route", "status"))
REQUEST_SECONDS = Histogram(
    "tally_http_request_seconds",
    "Time to serve an HTTP request.",
    ("method", "route"),
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

Handler = Callable[["Call"], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    scope: str
    # Status -> response schema; a tuple is "one of these" (see listAccountBalances).
    success: dict[int, type | tuple[type, ...] | None]
    request: type | None = None
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    tag: str = ""


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, its caller, and the service."""

    request: Request
    principal: Principal
    ledger: Ledger
    body_bytes_max: int
    page_limit_default: int
    page_limit_max: int
    idempotency_key: str | None = None
    raw_body: bytes = b""

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def request_id(self) -> str | None:
        return request_id_of(self.request)

    @property
    def claim(self) -> Claim | None:
        """The request's idempotency claim; call after ``body()``."""
        if self.idempotency_key is None:
            return None
        r = self.request
        return Claim(self.idempotency_key, fingerprint(r.method, r.url.path, self.raw_body))

    def path_id(self, name: str = "id") -> str:
        value: str = self.request.path_params[name]
        if not is_valid_id(value):
            # No object can have such an id, so it is simply not there.
            raise NotFound(f"No object with id {value!r}.")
        return value

    async def body(self, schema: type[Any], *, empty_ok: bool = False) -> Any:
        self.raw_body = await read_body(self.request, self.body_bytes_max, empty_ok=empty_ok)
        return decode(self.raw_body, schema)

    def limit(self) -> int:
        return query_int(self.request, "limit", self.page_limit_default, 1, self.page_limit_max)


def json(value: object, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return to_response(_stored_json(value, status, headers))


def account_etag(account: Account) -> str:
    return f'"{account.version}"'


def _expected_version(request: Request) -> int | None:
    """The version named by If-Match; None when there is no precondition."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/")
    digits = tag[1:-1]
    quoted = len(tag) >= 3 and tag.startswith('"') and tag.endswith('"')
    # A version is a BIGINT: more than 19 digits names none (and int() of thousands
    # of digits is refused).
    # isascii: str.isdigit() is true of "²" (a Latin-1 header byte), which int() refuses.
    if not quoted or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise PreconditionFailed("If-Match names no version of this account.")
    return int(digits)


def _created_status(outcome: Outcome) -> int:
    return 201 if outcome.status is Status.CREATED else 200


def _stored_json(
    value: object, status: int, headers: tuple[tuple[str, str], ...] = ()
) -> StoredResponse:
    return StoredResponse(status, encode(value), (("content-type", "application/json"), *headers))


def _refused(outcome: Outcome, request_id: str | None) -> StoredResponse:
    assert outcome.code is not None
    return problem(LedgerRefused(outcome.code, outcome.detail, outcome.fields), request_id)


def _written(written: Written) -> Response:
    return to_response(written.response, replayed=written.replayed)


# Renderers turn a write's outcomes into its response. They are pure, because
# for a keyed request they run inside the database transaction (the stored
# response is committed with the effect).


def _render_account(request_id: str | None) -> Render:
    def render(outcomes: list[Outcome]) -> StoredResponse:
        (outcome,) = outcomes
        if not outcome.ok:
            return _refused(outcome, request_id)
        account = outcome.object
        assert isinstance(account, Account)
        status = 200 if outcome.status is Status.UPDATED else _created_status(outcome)
        headers: tuple[tuple[str, str], ...] = (("etag", account_etag(account)),)
        if outcome.status is not Status.UPDATED:
            headers += (("location", f"/v1/accounts/{account.id}"),)
        return _stored_json(account_out(account), status, headers)

    return render


def _render_transfer(request_id: str | None) -> Render:
    def render(outcomes: list[Outcome]) -> StoredResponse:
        (outcome,) = outcomes
        if not outcome.ok:
            return _refused(outcome, request_id)
        transfer = outcome.object
        assert isinstance(transfer, Transfer)
        return _stored_json(
            transfer_out(transfer),
            _created_status(outcome),
            (("location", f"/v1/transfers/{transfer.id}"),),
        )

    return render


def _list(page: Page[Any], render: Callable[[Any], Any], list_type: type) -> Response:
    return json(
        list_type(
            data=[render(x) for x in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
    )


# -- accounts ---------------------------------------------------------------------------


async def create_account(call: Call) -> Response:
    body = await call.body(AccountCreate)
    written = await call.ledger.create_account(
        call.tenant_id, body, _render_account(call.request_id), call.claim
    )
    return _written(written)


async def get_account(call: Call) -> Response:
    account = await call.ledger.get_account(call.tenant_id, call.path_id())
    return json(account_out(account), headers=(("etag", account_etag(account)),))


async def update_account(call: Call) -> Response:
    account_id = call.path_id()
    expected = _expected_version(call.request)
    body = await call.body(AccountUpdate)
    written = await call.ledger.update_account(
        call.tenant_id, account_id, body, expected, _render_account(call.request_id), call.claim
    )
    return _written(written)


async def list_accounts(call: Call) -> Response:
    r = call.request
    page = await call.ledger.list_accounts(
        call.tenant_id,
        limit=call.limit(),
        cursor=query_text(r, "cursor", 128),
        currency=query_text(r, "currency", 16),
        status=query_choice(r, "status", ("open", "closed")),
        metadata=metadata_filters(r),
    )
    return _list(page, account_out, AccountList)


def _snapshot(account: Account, record: BalanceRecord) -> BalanceSnapshotOut:
    b = derive_balance(
        account.normal_balance,
        debits_pending=record.debits_pending,
        debits_posted=record.debits_posted,
        credits_pending=record.credits_pending,
        credits_posted=record.credits_posted,
    )
    return BalanceSnapshotOut(
        account_id=account.id,
        object="balance",
        version=record.version,
        transfer_id=record.transfer_id,
        debits_pending=record.debits_pending,
        debits_posted=record.debits_posted,
        credits_pending=record.credits_pending,
        credits_posted=record.credits_posted,
        balance=BalanceOut(b.posted, b.pending, b.available),
        created_at=None if record.created_at_us is None else format_time(record.created_at_us),
    )


async def account_balances(call: Call) -> Response:
    account_id = call.path_id()
    at = query_time(call.request, "at")
    account = await call.ledger.get_account(call.tenant_id, account_id)
    if at is not None:
        record = await call.ledger.balance_at(call.tenant_id, account, at)
        return json(_snapshot(account, record))
    page = await call.ledger.balance_history(
        call.tenant_id,
        account,
        limit=call.limit(),
        cursor=query_text(call.request, "cursor", 128),
    )
    return _list(page, lambda rec: _snapshot(account, rec), BalanceList)


# -- transfers --------------------------------------------------------------------------


async def create_transfer(call: Call) -> Response:
    body = await call.body(TransferCreate)
    written = await call.ledger.create_transfer(
        call.tenant_id, body, _render_transfer(call.request_id), call.claim
    )
    return _written(written)


async def post_transfer(call: Call) -> Response:
    pending_id = call.path_id()
    body = await call.body(PendingPost, empty_ok=True)
    written = await call.ledger.post_pending(
        call.tenant_id, pending_id, body, _render_transfer(call.request_id), call.claim
    )
    return _written(written)


async def void_transfer(call: Call) -> Response:
    pending_id = call.path_id()
    body = await call.body(PendingVoid, empty_ok=True)
    written = await call.ledger.void_pending(
        call.tenant_id, pending_id, body, _render_transfer(call.request_id), call.claim
    )
    return _written(written)


_TRANSFER_ONLY = ("debit_account_id", "credit_account_id", "currency", "pending", "timeout_seconds")


def _given(value: object) -> bool:
    return value is not None and value is not msgspec.UNSET


def _batch_item(item: BatchItem, index: int) -> TransferCreate | BatchAction:
    """Exactly one of the two shapes, or a 422 naming ``transfers[index].field``."""
    prefix = f"transfers[{index}]"

    def refuse(name: str, code: str, message: str) -> ValidationFailed:
        return ValidationFailed([FieldError(f"{prefix}.{name}", code, message)])

    if _given(item.pending_id) or _given(item.action):
        for name in _TRANSFER_ONLY:
            if _given(getattr(item, name)):
                raise refuse(name, "unknown_field", "A post or void action takes no such field.")
        if isinstance(item.pending_id, msgspec.UnsetType):
            raise refuse("pending_id", "required", "An action needs pending_id.")
        if isinstance(item.action, msgspec.UnsetType):
            raise refuse("action", "required", "An item with pending_id needs an action.")
        if item.action == "void" and item.amount is not None:
            raise refuse("amount", "invalid", "A void takes no amount.")
        return BatchAction(
            pending_id=item.pending_id,
            action=item.action,
            id=item.id,
            amount=item.amount,
            metadata=item.metadata,
        )
    debit, credit, amount = item.debit_account_id, item.credit_account_id, item.amount
    if (
        isinstance(debit, msgspec.UnsetType)
        or isinstance(credit, msgspec.UnsetType)
        or (amount is None)
    ):
        name = next(
            n
            for n in ("debit_account_id", "credit_account_id", "amount")
            if not _given(getattr(item, n))
        )
        raise refuse(name, "required", f"A transfer needs {name}.")
    return TransferCreate(
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        id=item.id,
        currency=item.currency,
        pending=item.pending is True,
        timeout_seconds=item.timeout_seconds,
        metadata=item.metadata,
    )


def _batch_result(index: int, outcome: Outcome) -> BatchResultOut:
    if outcome.ok:
        assert isinstance(outcome.object, Transfer)
        return BatchResultOut(
            index=index,
            status="created" if outcome.status is Status.CREATED else "exists",
            transfer=transfer_out(outcome.object),
            error=None,
        )
    assert outcome.code is not None
    return BatchResultOut(
        index=index, status="failed", transfer=None, error=ErrorOut(outcome.code, outcome.detail)
    )


def _render_batch(request_id: str | None, atomic: bool) -> Render:
    def render(outcomes: list[Outcome]) -> StoredResponse:
        results = [_batch_result(i, o) for i, o in enumerate(outcomes)]
        if not atomic:
            return _stored_json(BatchOut(results), 200)
        if all(o.ok for o in outcomes):
            return _stored_json(BatchOut(results), 201)
        failed = next(o for o in outcomes if o.code not in (None, Code.LINKED_EVENT_FAILED))
        error = TallyError(f"Item failed: {failed.detail} Nothing was applied.")
        error.status, error.code, error.title = 422, Code.BATCH_FAILED.value, "Batch failed"
        return problem(error, request_id, results)

    return render


async def create_batch(call: Call) -> Response:
    body = await call.body(BatchCreate)
    items = [_batch_item(raw, i) for i, raw in enumerate(body.transfers)]
    written = await call.ledger.create_batch(
        call.tenant_id,
        items,
        _render_batch(call.request_id, body.atomic),
        call.claim,
        atomic=body.atomic,
    )
    return _written(written)


async def get_transfer(call: Call) -> Response:
    transfer = await call.ledger.get_transfer(call.tenant_id, call.path_id())
    out = transfer_out(transfer)
    return json(out, headers=(("etag", f'"{transfer.sequence}-{transfer.status.value}"'),))


async def list_transfers(call: Call) -> Response:
    r = call.request
    account_id = query_text(r, "account_id")
    f = TransferFilter(
        account_id=account_id,
        status=query_choice(r, "status", ("posted", "pending", "voided", "expired")),
        created_after_us=query_time(r, "created_after"),
        created_before_us=query_time(r, "created_before"),
        descending=query_choice(r, "order", ("asc", "desc")) == "desc",
    )
    page = await call.ledger.list_transfers(
        call.tenant_id, f, limit=call.limit(), cursor=query_text(r, "cursor", 128)
    )
    return _list(page, transfer_out, TransferList)


# -- events -----------------------------------------------------------------------------


async def list_events(call: Call) -> Response:
    r = call.request
    page = await call.ledger.list_events(
        call.tenant_id,
        after=query_int(r, "after", 0, 0, 2**62),
        limit=call.limit(),
        cursor=query_text(r, "cursor", 128),
    )
    return _list(
        page,
        lambda e: EventOut(
            e.sequence,
            e.type,
            format_time(e.created_at_us),
            msgspec_raw(e.data),
        ),
        EventList,
    )


def msgspec_raw(text: str) -> msgspec.Raw:
    return msgspec.Raw(text.encode())


# -- the table ------------------------------------------------------------------------

_ID = Param("id", "path", {"type": "string", "maxLength": 64}, required=True)
_LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "Page size.",
)
_CURSOR = Param(
    "cursor", "query", {"type": "string", "maxLength": 128}, "The next_cursor of the previous page."
)
_TIME = {"type": "string", "format": "date-time"}
_WRITE_ERRORS = (400, 401, 403, 413, 415, 422, 503)
_READ_ERRORS = (401, 403, 422, 503)

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        "/v1/accounts",
        "createAccount",
        "Create an account",
        create_account,
        "accounts:write",
        {201: AccountOut, 200: AccountOut},
        AccountCreate,
        (*_WRITE_ERRORS, 409),
        tag="Accounts",
    ),
    RouteSpec(
        "GET",
        "/v1/accounts",
        "listAccounts",
        "List accounts",
        list_accounts,
        "accounts:read",
        {200: AccountList},
        None,
        _READ_ERRORS,
        (
            _LIMIT,
            _CURSOR,
            Param("currency", "query", {"type": "string", "maxLength": 16}),
            Param("status", "query", {"type": "string", "enum": ["open", "closed"]}),
            Param(
                "metadata",
                "query",
                {"type": "object", "additionalProperties": {"type": "string"}},
                "Filter metadata[key]=value (deepObject), at most 10.",
            ),
        ),
        tag="Accounts",
    ),
    RouteSpec(
        "GET",
        "/v1/accounts/{id}",
        "getAccount",
        "Retrieve an account",
        get_account,
        "accounts:read",
        {200: AccountOut},
        None,
        (*_READ_ERRORS, 404),
        (_ID,),
        tag="Accounts",
    ),
    RouteSpec(
        "PATCH",
        "/v1/accounts/{id}",
        "updateAccount",
        "Change an account's metadata or close it",
        update_account,
        "accounts:write",
        {200: AccountOut},
        AccountUpdate,
        (*_WRITE_ERRORS, 404, 412),
        (
            _ID,
            Param(
                "If-Match", "header", {"type": "string"}, "The ETag of the account as last read."
            ),
        ),
        tag="Accounts",
    ),
    RouteSpec(
        "GET",
        "/v1/accounts/{id}/balances",
        "listAccountBalances",
        "An account's balance history, or its balance at an instant",
        account_balances,
        "accounts:read",
        # A list of balances, or with ?at= the one balance as of that instant.
        {200: (BalanceList, BalanceSnapshotOut)},
        None,
        (*_READ_ERRORS, 404),
        (
            _ID,
            _LIMIT,
            _CURSOR,
            Param(
                "at",
                "query",
                _TIME,
                "Return a single balance object as of this instant instead of a list.",
            ),
        ),
        tag="Accounts",
    ),
    RouteSpec(
        "POST",
        "/v1/transfers",
        "createTransfer",
        "Create a transfer",
        create_transfer,
        "transfers:write",
        {201: TransferOut, 200: TransferOut},
        TransferCreate,
        (*_WRITE_ERRORS, 409),
        tag="Transfers",
    ),
    RouteSpec(
        "POST",
        "/v1/transfers/batch",
        "createTransferBatch",
        "Create up to 1000 transfers, posts and voids in order",
        create_batch,
        "transfers:write",
        {200: BatchOut, 201: BatchOut},
        BatchCreate,
        _WRITE_ERRORS,
        tag="Transfers",
    ),
    RouteSpec(
        "GET",
        "/v1/transfers",
        "listTransfers",
        "List transfers",
        list_transfers,
        "transfers:read",
        {200: TransferList},
        None,
        _READ_ERRORS,
        (
            _LIMIT,
            _CURSOR,
            Param("account_id", "query", {"type": "string", "maxLength": 64}),
            Param(
                "status",
                "query",
                {"type": "string", "enum": ["posted", "pending", "voided", "expired"]},
            ),
            Param("created_after", "query", _TIME),
            Param("created_before", "query", _TIME),
            Param("order", "query", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}),
        ),
        tag="Transfers",
    ),
    RouteSpec(
        "GET",
        "/v1/transfers/{id}",
        "getTransfer",
        "Retrieve a transfer",
        get_transfer,
        "transfers:read",
        {200: TransferOut},
        None,
        (*_READ_ERRORS, 404),
        (_ID,),
        tag="Transfers",
    ),
    RouteSpec(
        "POST",
        "/v1/transfers/{id}/post",
        "postTransfer",
        "Post a pending transfer",
        post_transfer,
        "transfers:write",
        {201: TransferOut, 200: TransferOut},
        PendingPost,
        (*_WRITE_ERRORS, 404, 409),
        (_ID,),
        tag="Transfers",
    ),
    RouteSpec(
        "POST",
        "/v1/transfers/{id}/void",
        "voidTransfer",
        "Void a pending transfer",
        void_transfer,
        "transfers:write",
        {201: TransferOut, 200: TransferOut},
        PendingVoid,
        (*_WRITE_ERRORS, 404, 409),
        (_ID,),
        tag="Transfers",
    ),
    RouteSpec(
        "GET",
        "/v1/events",
        "listEvents",
        "List events, oldest first",
        list_events,
        "events:read",
        {200: EventList},
        None,
        _READ_ERRORS,
        (
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0, "default": 0},
                "Return events with a sequence greater than this.",
            ),
            _LIMIT,
            _CURSOR,
        ),
        tag="Events",
    ),
)


def endpoint(spec: RouteSpec, settings: Any) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of a route: authenticate, run, render errors, measure."""

    async def run(request: Request) -> Response:
        started = time.perf_counter()
        state = request.app.state
        try:
            principal = await state.authenticator.authenticate(request.headers.get("authorization"))
            if spec.scope not in principal.scopes and "admin" not in principal.scopes:
                raise Forbidden(f"This key lacks the {spec.scope} scope.")
            call = Call(
                request,
                principal,
                state.ledger,
                settings.body_bytes_max,
                settings.page_limit_default,
                settings.page_limit_max,
            )
            if spec.method in ("POST", "PATCH"):
                call.idempotency_key = parse_key(request.headers.getlist("idempotency-key"))
                required = settings.require_idempotency_key and spec.method == "POST"
                if call.idempotency_key is None and required:
                    raise IdempotencyKeyRequired("Send an Idempotency-Key header.")
            response = await spec.handler(call)
        except TallyError as error:
            response = problem_response(error, request)
        except Exception:
            # A bug. The client learns only that, and the request id to report it by.
            log.exception("unhandled error in %s", spec.operation_id)
            response = problem_response(TallyError("An unexpected error occurred."), request)
        REQUESTS.labels(spec.method, spec.path, response.status_code).inc()
        REQUEST_SECONDS.labels(spec.method, spec.path).observe(time.perf_counter() - started)
        return response

    run.__name__ = spec.operation_id
    return run


__all__ = ["ROUTES", "RouteSpec", "endpoint"]
