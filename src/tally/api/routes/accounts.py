"""The account routes of api.md §4."""

from __future__ import annotations

from starlette.responses import Response

from tally.api.answers import (
    account_etag,
    answer_account,
    list_response,
    written_response,
)
from tally.api.endpoint import Call, Param, RouteTable
from tally.api.parsing import (
    expected_version,
    metadata_filters,
    query_choice,
    query_text,
    query_time,
)
from tally.api.responses import json_response
from tally.api.routes.params import CURSOR, ID, LIMIT, READ_ERRORS, TIME, WRITE_ERRORS
from tally.api.routes.params import query_text as text_param
from tally.api.schemas.common import NO_NUL
from tally.api.schemas.ledger import (
    AccountCreate,
    AccountList,
    AccountOut,
    AccountUpdate,
    BalanceList,
    BalanceOut,
    BalanceSnapshotOut,
)
from tally.core import Account, CreateAccount, UpdateAccount, derive_balance
from tally.ledger import commands
from tally.ledger.public import account_out
from tally.storage.records import BalanceRecord
from tally.support.clock import format_time

routes = RouteTable(tag="Accounts")


@routes.route(
    "POST", "/v1/accounts", "createAccount", "Create an account",
    scope="accounts:write", success={201: AccountOut, 200: AccountOut},
    request=AccountCreate, errors=(*WRITE_ERRORS, 409),
)  # fmt: skip
async def create_account(call: Call) -> Response:
    body: AccountCreate = await call.body(AccountCreate)
    command = account_command(body)
    ctx = call.write_context(answer_account(call.request_id))
    return written_response(await call.services.ledger.create_account(call.tenant_id, command, ctx))


def account_command(body: AccountCreate) -> CreateAccount:
    """The command of an account request (REST's body, a gRPC message's fields)."""
    return commands.create_account(
        id=body.id,
        currency=body.currency,
        normal_balance=body.normal_balance,
        debits_must_not_exceed_credits=body.flags.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=body.flags.credits_must_not_exceed_debits,
        metadata=body.metadata,
    )


_METADATA_FILTER = Param(
    "metadata",
    "query",
    # What parsing.metadata_filters accepts.
    {
        "type": "object",
        "maxProperties": 10,
        "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_NUL},
        "additionalProperties": {"type": "string", "maxLength": 512, "pattern": NO_NUL},
    },
    "Filter metadata[key]=value (deepObject), at most 10.",
    style="deepObject",
)


@routes.route(
    "GET", "/v1/accounts", "listAccounts", "List accounts",
    scope="accounts:read", success={200: AccountList}, errors=READ_ERRORS,
    params=(
        LIMIT,
        CURSOR,
        Param("currency", "query", text_param(16)),
        Param("status", "query", {"type": "string", "enum": ["open", "closed"]}),
        _METADATA_FILTER,
    ),
)  # fmt: skip
async def list_accounts(call: Call) -> Response:
    r = call.request
    page = await call.services.ledger.list_accounts(
        call.tenant_id,
        limit=call.limit(),
        cursor=query_text(r, "cursor", 128),
        currency=query_text(r, "currency", 16),
        status=query_choice(r, "status", ("open", "closed")),
        metadata=metadata_filters(r),
    )
    return list_response(page, account_out, AccountList)


@routes.route(
    "GET", "/v1/accounts/{id}", "getAccount", "Retrieve an account",
    scope="accounts:read", success={200: AccountOut}, errors=(*READ_ERRORS, 404), params=(ID,),
)  # fmt: skip
async def get_account(call: Call) -> Response:
    account = await call.services.ledger.get_account(call.tenant_id, call.path_id())
    return json_response(account_out(account), headers=(("etag", account_etag(account)),))


_IF_MATCH = Param(
    "If-Match",
    "header",
    # What parsing.expected_version reads as a version; anything else is a 412.
    {"type": "string", "pattern": '^(\\*|(W/)?"[0-9]{1,19}")$'},
    "The ETag of the account as last read, or *.",
)


@routes.route(
    "PATCH", "/v1/accounts/{id}", "updateAccount", "Change an account's metadata or close it",
    scope="accounts:write", success={200: AccountOut}, request=AccountUpdate,
    errors=(*WRITE_ERRORS, 404, 412), params=(ID, _IF_MATCH),
)  # fmt: skip
async def update_account(call: Call) -> Response:
    account_id = call.path_id()
    expected = expected_version(call.request)
    body: AccountUpdate = await call.body(AccountUpdate)
    command = UpdateAccount(
        id=account_id,
        metadata=body.metadata,
        close=body.status == "closed",
        expected_version=expected,
    )
    ctx = call.write_context(answer_account(call.request_id))
    return written_response(await call.services.ledger.update_account(call.tenant_id, command, ctx))


@routes.route(
    "GET", "/v1/accounts/{id}/balances", "listAccountBalances",
    "An account's balance history, or its balance at an instant",
    scope="accounts:read",
    # A list of balances, or with ?at= the one balance as of that instant.
    success={200: (BalanceList, BalanceSnapshotOut)},
    errors=(*READ_ERRORS, 404),
    params=(
        ID,
        LIMIT,
        CURSOR,
        Param(
            "at",
            "query",
            TIME,
            "Return a single balance object as of this instant instead of a list.",
        ),
    ),
)  # fmt: skip
async def account_balances(call: Call) -> Response:
    account_id = call.path_id()
    at = query_time(call.request, "at")
    # Checked even when ``at`` makes them moot: a malformed parameter is a 422, never
    # silently ignored.
    limit, cursor = call.limit(), query_text(call.request, "cursor", 128)
    ledger = call.services.ledger
    account = await ledger.get_account(call.tenant_id, account_id)
    if at is not None:
        return json_response(
            snapshot_out(account, await ledger.balance_at(call.tenant_id, account, at))
        )
    page = await ledger.balance_history(call.tenant_id, account, limit=limit, cursor=cursor)
    return list_response(page, lambda rec: snapshot_out(account, rec), BalanceList)


def snapshot_out(account: Account, record: BalanceRecord) -> BalanceSnapshotOut:
    """One row of an account's balance history as the API shows it (REST and GraphQL)."""
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
