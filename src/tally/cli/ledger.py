"""The command line for people: ``tally login``, ``accounts``, ``transfers``,
``events tail``, ``import`` and ``export``, over HTTP with ``tally.client``.

Every command prints lines for people by default and, with ``--json``, one JSON
object per line and nothing else on standard output (messages go to standard
error), so its output can be piped into ``jq`` or another program. A refusal
exits 1 with the contract's code and the request id; a usage error exits 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import msgspec
import typer

from tally.api.schemas.ledger import EventOut
from tally.cli import profiles
from tally.cli.root import AS_JSON, app, emit, typer_app
from tally.client import ApiError, Client, ConnectionFailed
from tally.client.calls import whoami
from tally.ledger.public import AccountOut, TransferOut

T = TypeVar("T")
accounts = typer_app("Accounts: create, list, show.")
app.add_typer(accounts, name="accounts")
transfers = typer_app("Transfers: create, post or void a pending one, list.")
app.add_typer(transfers, name="transfers")
events = typer_app("The event log: print it, and follow it as it grows.")
app.add_typer(events, name="events")

PROFILE = typer.Option("--profile", help="The saved profile to use (tally login).")
METADATA = typer.Option("--metadata", "-m", help="KEY=VALUE; repeat for more.")


def run(profile: str | None, work: Callable[[Client], T]) -> T:
    """Call the server with the profile's key; a refusal or no answer exits 1."""
    try:
        chosen = profiles.resolve(profile)
    except profiles.ProfileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        with Client(chosen.base_url, chosen.api_key) as client:
            return work(client)
    except ApiError as exc:
        typer.echo(f"error: {exc.code}: {exc.detail} (request {exc.request_id})", err=True)
        for field in exc.errors:
            typer.echo(f"  {field.get('field')}: {field.get('message')}", err=True)
        raise typer.Exit(1) from exc
    except ConnectionFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        out[key] = value
    return out


def as_dict(value: Any) -> dict[str, Any]:
    return msgspec.to_builtins(value)  # type: ignore[no-any-return]


def event_row(event: EventOut) -> dict[str, Any]:
    """An event as ``GET /v1/events`` lists it, its ``data`` an object again."""
    return {
        "sequence": event.sequence, "type": event.type, "created_at": event.created_at,
        "data": msgspec.json.decode(event.data),
    }  # fmt: skip


def show_account(a: AccountOut, as_json: bool) -> None:
    b = a.balance
    text = f"{a.id}  {a.currency}  balance {b.posted} (available {b.available})  {a.status}"
    emit(as_dict(a), as_json, text)


def show_transfer(t: TransferOut, as_json: bool) -> None:
    route = f"{t.debit_account_id} -> {t.credit_account_id}"
    text = f"{t.id}  {route}  {t.amount} {t.currency}  {t.status}"
    emit(as_dict(t), as_json, text)


@app.command()
def login(
    url: Annotated[str, typer.Option("--url", help="The server.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Asked for (hidden) if not given.")
    ] = None,
    profile: Annotated[str, typer.Option("--profile", help="Save under this name.")] = "default",
    default: Annotated[bool, typer.Option(help="Make it the default profile.")] = True,
) -> None:
    """Check an API key against the server and save it in a profile (mode 0600)."""
    key = api_key or typer.prompt("API key", hide_input=True)
    with Client(url, key) as client:
        try:
            me = client.send(whoami())
        except (ApiError, ConnectionFailed) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    path = profiles.remember(profile, url, key, make_default=default)
    typer.echo(f"logged in to {url} as {me.get('type', 'caller')} of tenant {me.get('tenant_id')}")
    typer.echo(f"saved profile {profile!r} in {path}", err=True)


@app.command()
def logout(profile: Annotated[str, typer.Option("--profile")] = "default") -> None:
    """Forget a saved profile and its key (the key itself stays valid: revoke it
    with DELETE /v1/api-keys/{id} to end it)."""
    if not profiles.forget(profile):
        typer.echo(f"no profile {profile!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"forgot profile {profile!r}", err=True)


@accounts.command("create")
def accounts_create(
    currency: Annotated[str, typer.Argument(help="USD, EUR, POINTS, …")],
    id: Annotated[str | None, typer.Option("--id", help="Your own id.")] = None,
    normal_balance: Annotated[str, typer.Option(help="credit or debit.")] = "credit",
    no_overdraft: Annotated[
        bool, typer.Option("--no-overdraft", help="Debits may not exceed credits.")
    ] = False,
    metadata: Annotated[list[str] | None, METADATA] = None,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Create an account."""
    if normal_balance not in ("credit", "debit"):
        raise typer.BadParameter("credit or debit", param_hint="--normal-balance")
    meta = pairs(metadata)
    account = run(
        profile,
        lambda c: c.accounts.create(
            currency, id=id, normal_balance=normal_balance, metadata=meta,
            debits_must_not_exceed_credits=no_overdraft,
        ),
    )  # fmt: skip
    show_account(account, as_json)


@accounts.command("list")
def accounts_list(
    currency: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option(help="open or closed.")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """List every account (all pages)."""

    def work(c: Client) -> None:
        for a in c.accounts.iterate(currency=currency, status=status, limit=1000):
            show_account(a, as_json)

    run(profile, work)


@accounts.command("show")
def accounts_show(
    id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Show one account with its totals."""
    show_account(run(profile, lambda c: c.accounts.get(id)), as_json)


@transfers.command("create")
def transfers_create(
    debit: Annotated[str, typer.Argument(metavar="DEBIT_ACCOUNT")],
    credit: Annotated[str, typer.Argument(metavar="CREDIT_ACCOUNT")],
    amount: Annotated[int, typer.Argument(help="Minor units (cents).")],
    id: Annotated[str | None, typer.Option("--id")] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="Hold it: post or void later.")
    ] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds (pending).")] = None,
    metadata: Annotated[list[str] | None, METADATA] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Move AMOUNT from DEBIT_ACCOUNT to CREDIT_ACCOUNT."""
    meta = pairs(metadata)
    made = run(
        profile,
        lambda c: c.transfers.create(
            debit, credit, amount, id=id, pending=pending, timeout_seconds=timeout,
            metadata=meta, idempotency_key=idempotency_key,
        ),
    )  # fmt: skip
    show_transfer(made, as_json)


@transfers.command("post")
def transfers_post(
    pending_id: Annotated[str, typer.Argument(metavar="PENDING_ID")],
    amount: Annotated[int | None, typer.Option(help="Less than the hold; default all.")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Post a pending transfer (all of it, or --amount)."""
    show_transfer(run(profile, lambda c: c.transfers.post(pending_id, amount=amount)), as_json)


@transfers.command("void")
def transfers_void(
    pending_id: Annotated[str, typer.Argument(metavar="PENDING_ID")],
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Void a pending transfer: release its hold."""
    show_transfer(run(profile, lambda c: c.transfers.void(pending_id)), as_json)


@transfers.command("list")
def transfers_list(
    account: Annotated[str | None, typer.Option("--account", help="Either side.")] = None,
    status: Annotated[str | None, typer.Option(help="posted, pending, voided, expired.")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """List transfers, oldest first (all pages)."""

    def work(c: Client) -> None:
        for t in c.transfers.iterate(account_id=account, status=status, limit=1000):
            show_transfer(t, as_json)

    run(profile, work)


@events.command("tail")
def events_tail(
    after: Annotated[int, typer.Option(help="Start after this sequence.")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Print the events after --after; with --follow, wait for more (Ctrl-C ends)."""

    def work(c: Client) -> None:
        cursor = after
        with contextlib.suppress(KeyboardInterrupt):
            for event in _events(c, cursor, follow):
                row = event_row(event)
                data = row["data"]
                emit(
                    row,
                    as_json,
                    f"{event.sequence}  {event.created_at}  {event.type}  {data.get('id')}",
                )
                sys.stdout.flush()

    run(profile, work)


def _events(c: Client, after: int, follow: bool) -> Iterator[Any]:
    """The events after ``after``; with ``follow``, then every new one, live, from
    the event stream (it resumes by itself after a dropped connection)."""
    if follow:
        return c.events.stream(after=after)
    return c.events.iterate(after=after, limit=1000)
