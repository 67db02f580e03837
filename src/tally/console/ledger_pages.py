"""The ledger's pages: accounts (search, keyset pages, one account with its balance
chart and transfers), transfers (new, one, post and void) and recent events.
Each calls the same ``Ledger`` use case as the REST route of the same name."""

from __future__ import annotations

import typing

from starlette.responses import Response

from tally.console import fields
from tally.console.chart import balance_chart
from tally.console.errors import status_of
from tally.console.web import CSP, LIVE_CSP, Form, Visit, path_of
from tally.console.writes import KEY_FIELD, keyed_write, new_key
from tally.core import Transfer, derive_balance
from tally.core.model import EventType
from tally.errors import MalformedRequest, NotFound, TallyError
from tally.ledger import commands
from tally.storage import TransferFilter

PAGE_SIZE = 50
HISTORY_POINTS_MAX = 500  # the chart's newest changes; older ones fall off its left
ACCOUNT = "/console/accounts/{id}"
TRANSFER = "/console/transfers/{id}"
AFTER_MAX = 2**62
LIVE_EVENTS = "/console/events/stream"
# What the live feed listens for (each Server-Sent Event is named by its type).
EVENT_TYPES: tuple[str, ...] = typing.get_args(EventType)
FLAGS = ("none", "debits_must_not_exceed_credits", "credits_must_not_exceed_debits")


def _cursor(visit: Visit) -> str | None:
    return visit.query("cursor") or None


def _metadata_filter(visit: Visit) -> dict[str, str]:
    key, value = visit.query("meta_key", 64), visit.query("meta_value", 512)
    if value and not key:
        raise MalformedRequest("A metadata search needs a key as well as a value.")
    return {key: value} if key else {}


async def accounts(visit: Visit) -> Response:
    search = {k: visit.query(k) for k in ("q", "currency", "meta_key", "meta_value")}
    currency = search["currency"].upper() or None
    page = await visit.services.ledger.list_accounts(
        visit.tenant_id,
        limit=PAGE_SIZE,
        cursor=_cursor(visit),
        currency=currency,
        status=None,
        metadata=_metadata_filter(visit),
        id_prefix=search["q"] or None,
    )
    first_query = {k: v for k, v in search.items() if v}
    next_query = dict(first_query)
    if page.next_cursor:
        next_query["cursor"] = page.next_cursor
    return visit.page(
        "accounts.html",
        accounts=page.items,
        search=search,
        next_query=next_query if page.next_cursor else None,
        paged=bool(_cursor(visit)),
        first_query=first_query,
        account_path=lambda a: path_of(ACCOUNT, id=a.id),
    )


async def account(visit: Visit) -> Response:
    ledger, tenant_id = visit.services.ledger, visit.tenant_id
    found = await ledger.get_account(tenant_id, visit.path_id())
    history = await ledger.balance_history(tenant_id, found, limit=HISTORY_POINTS_MAX, cursor=None)
    # The whole history fits: it starts at zero when the account was opened.
    points = [] if history.has_more else [(found.created_at_us, 0)]
    for record in reversed(history.items):  # newest first: the chart reads oldest first
        b = derive_balance(
            found.normal_balance,
            debits_pending=record.debits_pending,
            debits_posted=record.debits_posted,
            credits_pending=record.credits_pending,
            credits_posted=record.credits_posted,
        )
        points.append((record.created_at_us or found.created_at_us, b.posted))
    transfers = None
    if visit.may("transfers:read"):
        page = await ledger.list_transfers(
            tenant_id,
            TransferFilter(account_id=found.id, descending=True),
            limit=PAGE_SIZE,
            cursor=_cursor(visit),
        )
        transfers = page
    return visit.page(
        "account.html",
        account=found,
        chart=balance_chart(points, label=f"Posted balance of {found.id} over time"),
        transfers=transfers,
        transfer_path=lambda t_id: path_of(TRANSFER, id=t_id),
        account_path=lambda a_id: path_of(ACCOUNT, id=a_id),
    )


async def new_account_form(visit: Visit) -> Response:
    return _account_form(visit)


def _account_form(visit: Visit, error: TallyError | None = None, status: int = 200) -> Response:
    visit.audit_code = error.code if error else None
    return visit.page(
        "new_account.html",
        status,
        key=visit.form.raw(KEY_FIELD) or new_key(),
        form=visit.form,
        error=error,
        flags=FLAGS,
    )


async def create_account(visit: Visit) -> Response:
    form = visit.form
    try:
        flag = fields.choice(form, "flags", FLAGS)
        command = commands.create_account(
            id=fields.optional_id(form, "id"),
            currency=fields.currency(form),
            normal_balance=fields.choice(form, "normal_balance", ("credit", "debit")),
            debits_must_not_exceed_credits=flag == FLAGS[1],
            credits_must_not_exceed_debits=flag == FLAGS[2],
            metadata=fields.metadata(form),
        )
        # The fingerprint is what was asked, not the id the server made up.
        asked = {k: v for k, v in form.fields.items() if k not in ("csrf", KEY_FIELD)}
        account_id = await keyed_write(
            visit,
            lambda ctx: visit.services.ledger.create_account(visit.tenant_id, command, ctx),
            asked,
        )
    except TallyError as error:
        if error.code in ("unauthenticated", "forbidden", "rate_limited"):
            raise
        return _account_form(visit, error, status_of(error.code))
    return visit.see_other(path_of(ACCOUNT, id=account_id))


async def new_transfer_form(visit: Visit) -> Response:
    return _transfer_form(visit)


def _transfer_form(visit: Visit, error: TallyError | None = None, status: int = 200) -> Response:
    visit.audit_code = error.code if error else None
    prefill = {
        "debit_account_id": visit.query("debit", 64),
        "credit_account_id": visit.query("credit", 64),
    }
    return visit.page(
        "new_transfer.html",
        status,
        key=visit.form.raw(KEY_FIELD) or new_key(),
        form=visit.form,
        prefill=prefill,
        error=error,
    )


async def create_transfer(visit: Visit) -> Response:
    form = visit.form
    try:
        pending = form.checked("pending")
        command = commands.create_transfer(
            id=fields.optional_id(form, "id"),
            debit_account_id=fields.required_id(form, "debit_account_id"),
            credit_account_id=fields.required_id(form, "credit_account_id"),
            amount=fields.amount(form),
            pending=pending,
            timeout_seconds=fields.timeout_seconds(form) if pending else None,
            metadata=fields.metadata(form),
        )
        asked = {k: v for k, v in form.fields.items() if k not in ("csrf", KEY_FIELD)}
        transfer_id = await keyed_write(
            visit,
            lambda ctx: visit.services.ledger.create_transfer(visit.tenant_id, command, ctx),
            asked,
        )
    except TallyError as error:
        if error.code in ("unauthenticated", "forbidden", "rate_limited"):
            raise
        return _transfer_form(visit, error, status_of(error.code))
    return visit.see_other(path_of(TRANSFER, id=transfer_id))


async def transfer(visit: Visit) -> Response:
    found = await visit.services.ledger.get_transfer(visit.tenant_id, visit.path_id())
    return _transfer_page(visit, found)


def _transfer_page(
    visit: Visit, found: Transfer, error: TallyError | None = None, status: int = 200
) -> Response:
    visit.audit_code = error.code if error else None
    return visit.page(
        "transfer.html",
        status,
        transfer=found,
        post_key=new_key(),
        void_key=new_key(),
        error=error,
        account_path=lambda a_id: path_of(ACCOUNT, id=a_id),
        transfer_path=lambda t_id: path_of(TRANSFER, id=t_id),
    )


async def post_transfer(visit: Visit) -> Response:
    return await _resolve(visit, "post")


async def void_transfer(visit: Visit) -> Response:
    return await _resolve(visit, "void")


async def _resolve(visit: Visit, action: str) -> Response:
    ledger, tenant_id = visit.services.ledger, visit.tenant_id
    pending_id = visit.path_id()
    found = await ledger.get_transfer(tenant_id, pending_id)  # 404 for another tenant's
    try:
        if action == "post":
            post = commands.post_pending(pending_id, amount=fields.optional_amount(visit.form))
            resolved = await keyed_write(
                visit,
                lambda ctx: ledger.post_pending(tenant_id, post, ctx),
                {"action": action, "amount": visit.form.text("amount")},
            )
        else:
            void = commands.void_pending(pending_id)
            resolved = await keyed_write(
                visit, lambda ctx: ledger.void_pending(tenant_id, void, ctx), {"action": action}
            )
    except TallyError as error:
        if error.code in ("unauthenticated", "forbidden", "rate_limited"):
            raise
        return _transfer_page(visit, found, error, status_of(error.code))
    return visit.see_other(path_of(TRANSFER, id=resolved))


async def events(visit: Visit) -> Response:
    after = fields.optional_integer(
        Form({"after": visit.query("after", 20)}), "after", 0, AFTER_MAX
    )
    after = after or 0
    page = await visit.services.ledger.list_events(
        visit.tenant_id, after=after, limit=PAGE_SIZE, cursor=_cursor(visit)
    )
    # The last page live: its feed starts after the last event shown (or the
    # sequence asked for), so nothing is shown twice and nothing is skipped.
    live = page.next_cursor is None and visit.open_stream is not None
    last = page.items[-1].sequence if page.items else after
    return visit.page(
        "events.html",
        csp=LIVE_CSP if live else CSP,
        events=page.items,
        after=after,
        next_cursor=page.next_cursor,
        live=live,
        stream=f"{LIVE_EVENTS}?after={last}",
        event_types=",".join(EVENT_TYPES),
    )


async def live_events(visit: Visit) -> Response:
    """The events page's live feed (``static/live.js`` reads it): the tenant's
    Server-Sent Events stream, the one /v1/events/stream serves, behind the
    session cookie. ``Last-Event-ID`` (a reconnecting EventSource) or ``?after=``
    says where it resumes."""
    if visit.open_stream is None:
        raise NotFound("This console serves no live feed.")
    return await visit.open_stream(visit.request, visit.services, visit.tenant_id)
