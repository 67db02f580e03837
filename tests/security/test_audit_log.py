"""The audit log (docs/security.md): OWASP API Top 10 asks that misuse be seen; this
is where Tally sees it.

What this module proves:

- every mutating request, allowed or refused (201, 204, 401 on a known email,
  403, 404, 422), appears in ``GET /v1/audit-events`` with its actor, action
  (the operation id), object, status, error code, request id and client
  address, and is sealed onto the hash chain within seconds; reads are not
  logged;
- ``tally audit verify`` passes on an untouched log and exits 1 naming the
  damage when a row is edited, a row is deleted, the newest rows are cut off, or
  a row is slipped in past the head. The tampering is done in the database
  directly, as a DBA or an attacker with the database would. (The CLI runs as a
  subprocess where its output is the point; elsewhere ``tally.audit.chain.verify``
  runs in-process, which is what the CLI calls, to keep the suite fast.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tally.api.openapi import ROUTES
from tally.audit import chain as audit
from tally.audit.context import FIELDS, INSERT_SQL
from tally.config import Settings
from tally.console import CONSOLE_ROUTES
from tally.storage import make_store
from tests.conftest import create_tenant
from tests.console_client import Browser
from tests.security.conftest import CONSOLE_FORMS as CONSOLE_FORMS_FIELDS
from tests.security.conftest import (
    OTHER_PASSWORD,
    Db,
    Tenant,
    assert_problem,
    console_path,
    make_key,
    new_database,
    serve,
    signup,
)

# txid too, so that a row put back keeps its place in the sealer's order.
EVENT_COLUMNS = ("id", *FIELDS, "txid")
SEAL_COLUMNS = ("chain_seq", "chain_hash")
COLUMNS = (*EVENT_COLUMNS, *SEAL_COLUMNS)
# The id of the event sealed at place $1 of the chain (its seal is a row of
# audit_seals: migration 0008). Db takes $n in order on SQLite: $1 comes first.
EVENT_AT = "(SELECT event_id FROM audit_seals WHERE chain_seq = $1)"


def events_until(owner: Any, request_ids: set[str], sealed: bool) -> dict[str, dict[str, Any]]:
    """The tenant's audit events by request id, once all of ``request_ids`` are
    there (and sealed, if asked): rows of refusals are written within the
    appender's flush, and sealed within the sealer's interval."""
    deadline = time.monotonic() + 10
    while True:
        r = owner.get("/v1/audit-events", params={"limit": "1000"})
        assert r.status_code == 200, r.text
        by_request = {e["request_id"]: e for e in r.json()["data"]}
        found = request_ids <= by_request.keys()
        if found and (not sealed or all(by_request[i]["chain_seq"] for i in request_ids)):
            return by_request
        assert time.monotonic() < deadline, (request_ids - by_request.keys(), by_request)
        time.sleep(0.1)


def test_mutating_requests_allowed_and_refused_are_in_the_audit_log(client: TestClient) -> None:
    owner = signup(client, "audited")
    reader = make_key(owner, "reader", ["accounts:read"])
    prefix = f"audit-{secrets.token_hex(4)}"

    def rid(name: str) -> dict[str, str]:
        return {"Request-Id": f"{prefix}-{name}"}

    expected: dict[str, tuple[str, int, str | None, str, str, str | None]] = {}
    # name: (action, status, code, actor type, actor id, object id)
    r = owner.post("/v1/accounts", {"id": "audited", "currency": "USD"}, headers=rid("created"))
    assert r.status_code == 201
    expected["created"] = ("createAccount", 201, None, "user", owner.user_id, "audited")
    r = reader.post("/v1/accounts", {"currency": "USD"}, headers=rid("forbidden"))
    assert_problem(r, 403, "forbidden")
    expected["forbidden"] = ("createAccount", 403, "forbidden", "api_key", reader.key_id, None)
    r = owner.post("/v1/accounts", {"currency": 7}, headers=rid("invalid"))
    assert_problem(r, 422, "validation_error")
    expected["invalid"] = ("createAccount", 422, "validation_error", "user", owner.user_id, None)
    r = owner.patch("/v1/accounts/nowhere", {"status": "closed"}, headers=rid("missing"))
    assert_problem(r, 404, "not_found")
    expected["missing"] = ("updateAccount", 404, "not_found", "user", owner.user_id, None)
    key = make_key(owner, "short-lived", ["events:read"])
    r = owner.delete(f"/v1/api-keys/{key.key_id}", headers=rid("revoked"))
    assert r.status_code == 204
    expected["revoked"] = ("revokeApiKey", 204, None, "user", owner.user_id, key.key_id)
    r = client.post(
        "/v1/auth/login",
        json={"email": owner.email, "password": OTHER_PASSWORD},
        headers=rid("bad-login"),
    )
    assert_problem(r, 401, "unauthenticated")
    expected["bad-login"] = ("login", 401, "unauthenticated", "anonymous", None, owner.user_id)
    assert owner.get("/v1/accounts/audited", headers=rid("read")).status_code == 200

    ids = {f"{prefix}-{name}" for name in expected}
    events = events_until(owner, ids, sealed=True)
    for name, (action, status, code, actor_type, actor_id, object_id) in expected.items():
        event = events[f"{prefix}-{name}"]
        assert event["action"] == action, event
        assert event["status"] == status, event
        assert event["code"] == code, event
        assert event["actor"] == {"type": actor_type, "id": actor_id}, event
        if object_id is not None:
            assert event["object_id"] == object_id, event
        assert event["client_address"] == "testclient", event
        assert len(event["chain_hash"]) == 64, event
    assert f"{prefix}-read" not in events  # reads are not audited
    seqs = [e["chain_seq"] for e in events.values() if e["chain_seq"] is not None]
    assert len(seqs) == len(set(seqs))


# -- the chain, its verifier and its head ------------------------------------------------------


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verify_directly(url: str) -> audit.Verdict:
    async def work() -> audit.Verdict:
        store = make_store(Settings(database_url=url))
        await store.open()
        try:
            return await audit.verify(store)
        finally:
            await store.close()

    return asyncio.run(work())


def seal_all(url: str) -> None:
    async def work() -> None:
        store = make_store(Settings(database_url=url))
        await store.open()
        try:
            while await audit.seal(store, 1000):
                pass
        finally:
            await store.close()

    asyncio.run(work())


@pytest.fixture(scope="module")
def audited(database_url: str) -> Iterator[str]:
    """A database of its own, with a sealed audit log of a dozen rows (changes and
    refusals): the tests below damage it and put it back."""
    with new_database(database_url) as url:
        _, key = create_tenant(url, "audited")
        with serve(url, audit_seal_interval_seconds=0.1) as c:
            headers = {"Authorization": f"Bearer {key}"}
            for i in range(4):
                r = c.post("/v1/accounts", json={"id": f"a{i}", "currency": "USD"}, headers=headers)
                assert r.status_code == 201, r.text
            reader = c.post(
                "/v1/api-keys", json={"name": "r", "scopes": ["accounts:read"]}, headers=headers
            ).json()["secret"]
            for _ in range(3):
                r = c.post(
                    "/v1/accounts",
                    json={"currency": "USD"},
                    headers={"Authorization": f"Bearer {reader}"},
                )
                assert r.status_code == 403
            for _ in range(3):
                r = c.post("/v1/accounts", json={"currency": 1}, headers=headers)
                assert r.status_code == 422
        seal_all(url)
        verdict = verify_directly(url)
        assert verdict.ok and verdict.unsealed == 0 and verdict.sealed >= 10, verdict
        yield url


def row(db: Db, seq: int) -> tuple[Any, ...]:
    """The event at place ``seq`` of the chain with its seal, in COLUMNS' order."""
    (found,) = db.fetch(
        f"SELECT {', '.join(f'e.{c}' for c in EVENT_COLUMNS)}, s.chain_seq, s.chain_hash"
        " FROM audit_events AS e JOIN audit_seals AS s ON s.event_id = e.id"
        " WHERE s.chain_seq = $1",
        seq,
    )
    return found


def put_back(db: Db, rows: list[tuple[Any, ...]], *, seals: bool = False) -> None:
    """Insert the events of ``rows`` again (and their seals, if asked)."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(EVENT_COLUMNS) + 1))
    for values in rows:
        db.execute(
            f"INSERT INTO audit_events ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})",
            *values[: len(EVENT_COLUMNS)],
        )
        if seals:
            db.execute(
                "INSERT INTO audit_seals (event_id, chain_seq, chain_hash) VALUES ($1, $2, $3)",
                values[0],
                *values[len(EVENT_COLUMNS) :],
            )


def test_verify_passes_on_an_untouched_log(audited: str) -> None:
    result = cli(audited, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TAMPERED" not in result.stdout
    assert result.stderr.strip().endswith("ok"), result.stderr


def test_verify_detects_an_edited_row(audited: str) -> None:
    db = Db(audited)
    original = row(db, 5)
    status_at = COLUMNS.index("status_code")
    # A refusal made to look like a success (or the other way round).
    forged_status = 201 if original[status_at] != 201 else 403
    edit = (
        "UPDATE audit_events SET status_code = $1"
        " WHERE id = (SELECT event_id FROM audit_seals WHERE chain_seq = $2)"
    )
    db.execute(edit, forged_status, 5)
    try:
        result = cli(audited, "audit", "verify")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "TAMPERED: row 5" in result.stdout and "edited" in result.stdout, result.stdout
        assert "FAILED" in result.stderr
    finally:
        db.execute(edit, original[status_at], 5)
    assert verify_directly(audited).ok


@pytest.mark.parametrize("with_its_seal", [False, True], ids=["the event", "event and seal"])
def test_verify_detects_a_deleted_row(audited: str, with_its_seal: bool) -> None:
    db = Db(audited)
    deleted = row(db, 3)
    if with_its_seal:
        db.execute("DELETE FROM audit_seals WHERE chain_seq = 3")
        db.execute("DELETE FROM audit_events WHERE id = $1", deleted[0])
    else:
        db.execute(f"DELETE FROM audit_events WHERE id = {EVENT_AT}", 3)
    try:
        verdict = verify_directly(audited)
        assert not verdict.ok
        assert any("3..3" in p and "missing" in p for p in verdict.problems), verdict.problems
        if not with_its_seal:  # the seal still names the row's hash: row 4 verifies
            assert len(verdict.problems) == 1, verdict.problems
    finally:
        put_back(db, [deleted], seals=with_its_seal)
    assert verify_directly(audited).ok


def test_verify_detects_a_cut_off_tail(audited: str) -> None:
    db = Db(audited)
    (head,) = db.fetch("SELECT head_seq FROM audit_chain WHERE id = 1")
    tail = [row(db, seq) for seq in (head[0] - 1, head[0])]
    db.execute(
        "DELETE FROM audit_events WHERE id IN"
        " (SELECT event_id FROM audit_seals WHERE chain_seq >= $1)",
        head[0] - 1,
    )
    try:
        verdict = verify_directly(audited)
        assert not verdict.ok
        expected = f"rows {head[0] - 1}..{head[0]} at the end are missing"
        assert expected in verdict.problems, verdict.problems
    finally:
        put_back(db, tail)
    assert verify_directly(audited).ok


def test_verify_detects_a_row_slipped_in_past_the_head(audited: str) -> None:
    db = Db(audited)
    (head,) = db.fetch("SELECT head_seq, head_hash FROM audit_chain WHERE id = 1")
    last = list(row(db, head[0]))
    forged = list(last)
    forged[COLUMNS.index("id")] = last[0] + 1000
    forged[COLUMNS.index("chain_seq")] = head[0] + 1
    forged[COLUMNS.index("chain_hash")] = audit.chain_hash(
        head[1], head[0] + 1, forged[1 : 1 + len(FIELDS)]
    )
    put_back(db, [tuple(forged)], seals=True)
    try:
        verdict = verify_directly(audited)
        assert not verdict.ok
        assert any("past the head" in p for p in verdict.problems), verdict.problems
    finally:
        db.execute(f"DELETE FROM audit_events WHERE id = {EVENT_AT}", head[0] + 1)
        db.execute("DELETE FROM audit_seals WHERE chain_seq = $1", head[0] + 1)
    assert verify_directly(audited).ok


def test_verify_names_a_row_whose_seal_alone_was_deleted(audited: str) -> None:
    """The event is still there, its seal is not: the sealer, past it, will never
    come back for it, so it is named, not merely counted as waiting."""
    db = Db(audited)
    kept = row(db, 3)
    db.execute("DELETE FROM audit_seals WHERE chain_seq = 3")
    try:
        verdict = verify_directly(audited)
        assert not verdict.ok
        assert any("3..3" in p and "missing" in p for p in verdict.problems), verdict.problems
        behind = [p for p in verdict.problems if "behind the chain's mark" in p]
        assert behind and f"id {kept[0]}" in behind[0], verdict.problems
    finally:
        db.execute(
            "INSERT INTO audit_seals (event_id, chain_seq, chain_hash) VALUES ($1, $2, $3)",
            kept[0],
            *kept[len(EVENT_COLUMNS) :],
        )
    assert verify_directly(audited).ok


def audit_rows(n: int, prefix: str) -> list[tuple[Any, ...]]:
    """``n`` audit rows in the order of FIELDS, request ids ``{prefix}{i}``."""
    return [
        (None, 1, "anonymous", None, "login", None, 401, "unauthenticated", f"{prefix}{i}", None)
        for i in range(n)
    ]


def write_and_seal(url: str, rows: list[tuple[Any, ...]]) -> None:
    async def work() -> None:
        store = make_store(Settings(database_url=url))
        await store.open()
        try:
            async with store.transaction() as tx:
                for values in rows:
                    await tx.execute(INSERT_SQL, *values)
            while await audit.seal(store, 1000):
                pass
        finally:
            await store.close()

    asyncio.run(work())


def test_rows_after_a_cut_off_tail_never_take_the_deleted_rows_seals(database_url: str) -> None:
    """Deleting the newest rows (and not their seals) must not let new rows reuse
    their ids, and so their places: SQLite's table has AUTOINCREMENT (0008)."""
    with new_database(database_url) as url:
        write_and_seal(url, audit_rows(5, "before-"))
        db = Db(url)
        (newest,) = db.fetch("SELECT MAX(id) FROM audit_events")
        db.execute("DELETE FROM audit_events WHERE id > $1", newest[0] - 2)
        write_and_seal(url, audit_rows(3, "after-"))
        every = db.fetch(
            "SELECT e.id, e.request_id, s.chain_seq FROM audit_events AS e"
            " JOIN audit_seals AS s ON s.event_id = e.id ORDER BY e.id"
        )
        sealed = [r for r in every if r[1].startswith("after-")]
        assert [r[0] > newest[0] for r in sealed] == [True] * 3, sealed
        assert [r[2] for r in sealed] == [6, 7, 8], sealed
        verdict = verify_directly(url)
        assert verdict.problems == ["rows 4..5 of the chain are missing (deleted)"], verdict


def test_a_mark_from_another_cluster_is_moved_and_sealing_goes_on(postgres_url: str) -> None:
    """A dump restored into another PostgreSQL cluster brings a mark naming
    transaction ids this cluster has not reached: rows written here would sort
    before it forever. The sealer moves the mark and seals them."""
    with new_database(postgres_url) as url:
        write_and_seal(url, audit_rows(2, "old-"))
        db = Db(url)
        # As if the old cluster had run 10^12 transactions more than this one.
        db.execute("UPDATE audit_chain SET mark_txid = mark_txid + 1000000000000")
        db.execute("UPDATE audit_events SET txid = txid + 1000000000000")
        write_and_seal(url, audit_rows(3, "here-"))
        verdict = verify_directly(url)
        assert verdict.ok and (verdict.sealed, verdict.unsealed) == (5, 0), verdict
        (mark,) = db.fetch("SELECT mark_txid FROM audit_chain WHERE id = 1")
        (now,) = db.fetch("SELECT pg_current_xact_id()::text::bigint")
        assert 0 < mark[0] < now[0]


def test_graphql_mutations_allowed_refused_and_replayed_are_in_the_audit_log(
    client: TestClient,
) -> None:
    owner = signup(client, "audited-gql")
    reader = make_key(owner, "reader", ["accounts:read"])
    prefix = f"audit-gql-{secrets.token_hex(4)}"
    create = {"query": 'mutation { createAccount(input: {id: "gql", currency: "USD"}) { id } }'}
    invalid = {"query": 'mutation { createAccount(input: {currency: "usd"}) { id } }'}

    def send(caller: Any, body: dict[str, Any], name: str, **headers: str) -> None:
        r = caller.post("/graphql", body, headers={"Request-Id": f"{prefix}-{name}", **headers})
        assert r.status_code == 200, r.text

    send(owner, create, "created", **{"Idempotency-Key": "gql-once"})
    send(owner, create, "replayed", **{"Idempotency-Key": "gql-once"})
    send(reader, create, "forbidden")
    send(owner, invalid, "invalid")
    send(owner, {"query": "{ accounts { nodes { id } } }"}, "read")
    expected = {
        "created": (201, None, "user", owner.user_id),
        "replayed": (201, "idempotent_replayed", "user", owner.user_id),
        "forbidden": (403, "forbidden", "api_key", reader.key_id),
        "invalid": (422, "validation_error", "user", owner.user_id),
    }
    events = events_until(owner, {f"{prefix}-{name}" for name in expected}, sealed=False)
    for name, (status, code, actor_type, actor_id) in expected.items():
        event = events[f"{prefix}-{name}"]
        assert event["action"] == "graphql:createAccount", event
        assert (event["status"], event["code"]) == (status, code), event
        assert event["actor"] == {"type": actor_type, "id": actor_id}, event
    assert f"{prefix}-read" not in events  # reads are not audited


# -- the console's forms -------------------------------------------------------------------

CONSOLE_FORMS = [r for r in CONSOLE_ROUTES if r.method == "POST" and r.auth]


def test_every_console_form_refused_is_in_the_audit_log_under_its_rest_action(
    tenant: Tenant, consoles: dict[str, Browser]
) -> None:
    """A forged form (no CSRF token) is refused and recorded, like any refused
    request, with the same action as the REST operation of the same use case."""
    owner = consoles["owner"]
    expected: dict[str, str] = {}
    for route in CONSOLE_FORMS:
        r = owner.post(console_path(route), {"probe": "1", **CONSOLE_FORMS_FIELDS[route.path]})
        assert r.status_code == 403, (route.path, r.text)
        expected[r.headers["request-id"]] = route.action
    events = events_until(tenant.owner, set(expected), sealed=False)
    for request_id, action in expected.items():
        event = events[request_id]
        assert (event["action"], event["status"], event["code"]) == (action, 403, "forbidden")
        assert event["actor"] == {"type": "user", "id": tenant.owner.user_id}
    assert {r.action for r in CONSOLE_FORMS} <= {s.operation_id for s in ROUTES}
