"""The Idempotency-Key header (api.md §3), every rule in both spaces, both backends."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.testclient import TestClient

from tally.api import create_app
from tally.api.problems import status_of
from tally.config import Settings
from tally.core import CreateAccount
from tally.errors import IdempotencyKeyInUse
from tally.ledger import Ledger, WriteContext
from tally.ledger.idempotency import Claim, fingerprint
from tally.ledger.retention import purge_expired_keys
from tally.ledger.writer import Writer
from tally.storage import make_store
from tally.storage.records import StoredResponse
from tally.support.clock import wall_clock_us as writer_clock
from tests.api.conftest import Api
from tests.conftest import FakeClock, create_tenant

DAY_SECONDS = 86_400


@pytest.fixture
def funded(api: Api) -> Api:
    api.account("bank", normal_balance="debit")
    api.account("alice", flags={"debits_must_not_exceed_credits": True})
    api.transfer("bank", "alice", 100)
    return api


def keyed(api: Api, key: str, body: object, path: str = "/v1/transfers") -> httpx.Response:
    return api.post(path, body, headers={"Idempotency-Key": key})


def pay(amount: int = 10) -> dict[str, object]:
    return {"debit_account_id": "alice", "credit_account_id": "bank", "amount": amount}


def transfers_of(api: Api, account_id: str = "alice") -> list[dict[str, object]]:
    page = api.get("/v1/transfers", params={"account_id": account_id, "limit": 1000}).json()
    return page["data"]  # type: ignore[no-any-return]


def test_a_retry_replays_the_stored_response_byte_for_byte(funded: Api) -> None:
    first = keyed(funded, "k-1", pay())
    again = keyed(funded, "k-1", pay())
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["request-id"] != first.headers["request-id"]
    assert len(transfers_of(funded)) == 2  # the funding transfer and one payment


def test_key_order_and_white_space_of_the_body_do_not_matter(funded: Api) -> None:
    body = b'{"debit_account_id":"alice","credit_account_id":"bank","amount":10}'
    shuffled = b'{ "amount": 10,\n "credit_account_id": "bank", "debit_account_id": "alice" }'
    headers = {**funded.headers, "Idempotency-Key": "k-2", "Content-Type": "application/json"}
    first = funded.client.post("/v1/transfers", content=body, headers=headers)
    again = funded.client.post("/v1/transfers", content=shuffled, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/transfers", pay(11)),  # another body
        ("/v1/accounts", {"currency": "USD"}),  # another path
    ],
)
def test_the_same_key_for_a_different_request_is_422_and_executes_nothing(
    funded: Api, path: str, body: dict[str, object]
) -> None:
    keyed(funded, "k-3", pay(10))
    events = funded.get("/v1/events").json()["data"]
    r = keyed(funded, "k-3", body, path=path)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"
    assert funded.get("/v1/events").json()["data"] == events


def test_keys_are_scoped_to_the_tenant(funded: Api, other_api: Api) -> None:
    keyed(funded, "shared-key", pay())
    other_api.account("x")
    other_api.account("y", normal_balance="debit")
    r = keyed(
        other_api, "shared-key", {"debit_account_id": "y", "credit_account_id": "x", "amount": 10}
    )
    assert r.status_code == 201
    assert "idempotent-replayed" not in r.headers


def test_a_business_refusal_is_stored_and_replayed_not_reexecuted(funded: Api) -> None:
    refused = keyed(funded, "k-4", pay(500))
    assert refused.status_code == 422
    assert refused.json()["code"] == "exceeds_credits"
    funded.transfer("bank", "alice", 1000)  # now it would succeed if executed again
    again = keyed(funded, "k-4", pay(500))
    assert again.status_code == 422
    assert again.content == refused.content
    assert again.headers["idempotent-replayed"] == "true"


def test_a_schema_error_is_not_stored_so_the_fixed_request_executes(funded: Api) -> None:
    bad = keyed(funded, "k-5", {**pay(), "amount": 1.5})
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"
    fixed = keyed(funded, "k-5", pay())
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


def test_an_authentication_failure_is_not_stored(funded: Api) -> None:
    r = funded.client.post(
        "/v1/transfers",
        json=pay(),
        headers={"Idempotency-Key": "k-6", "Authorization": "Bearer tly_wrong"},
    )
    assert r.status_code == 401
    ok = keyed(funded, "k-6", pay())
    assert ok.status_code == 201
    assert "idempotent-replayed" not in ok.headers


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "tab\there", "caf\u00e9".encode().decode("latin-1"), "line\x7f"],
)
def test_a_malformed_key_is_400_and_executes_nothing(funded: Api, key: str) -> None:
    before = transfers_of(funded)
    r = funded.client.post(
        "/v1/transfers",
        json=pay(),
        headers=[
            ("Authorization", f"Bearer {funded.api_key}"),
            ("Idempotency-Key", key.encode("latin-1")),  # type: ignore[list-item]
        ],
    )
    assert r.status_code == 400
    assert r.json()["code"] == "idempotency_key_invalid"
    assert transfers_of(funded) == before


def test_a_key_of_255_printable_characters_is_accepted(funded: Api) -> None:
    key = "".join(chr(32 + i % 95) for i in range(255))
    assert keyed(funded, key, pay()).status_code == 201


def test_a_repeated_key_header_is_400(funded: Api) -> None:
    r = funded.client.post(
        "/v1/transfers",
        json=pay(),
        headers=[
            ("Authorization", f"Bearer {funded.api_key}"),
            ("Idempotency-Key", "a"),
            ("Idempotency-Key", "b"),
        ],
    )
    assert r.status_code == 400
    assert r.json()["code"] == "idempotency_key_invalid"


def test_patch_with_a_key_is_replayed(funded: Api) -> None:
    first = funded.patch(
        "/v1/accounts/alice", {"metadata": {"a": "1"}}, headers={"Idempotency-Key": "k-7"}
    )
    again = funded.patch(
        "/v1/accounts/alice", {"metadata": {"a": "1"}}, headers={"Idempotency-Key": "k-7"}
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert funded.balance("alice")["version"] == first.json()["version"]


def test_post_void_and_batch_are_replayed(funded: Api) -> None:
    funded.transfer("alice", "bank", 5, id="hold", pending=True)
    post = keyed(funded, "k-8", {}, path="/v1/transfers/hold/post")
    post_again = keyed(funded, "k-8", {}, path="/v1/transfers/hold/post")
    assert post_again.content == post.content
    assert post_again.status_code == 201
    batch = {"atomic": True, "transfers": [pay(1), pay(1000)]}
    failed = keyed(funded, "k-9", batch, path="/v1/transfers/batch")
    failed_again = keyed(funded, "k-9", batch, path="/v1/transfers/batch")
    assert failed.json()["code"] == "batch_failed"
    assert failed_again.content == failed.content
    assert failed_again.headers["idempotent-replayed"] == "true"


def test_after_retention_the_key_is_new_again(funded: Api, clock: FakeClock) -> None:
    first = keyed(funded, "k-10", pay())
    clock.advance(DAY_SECONDS + 1)
    again = keyed(funded, "k-10", pay())
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]


def test_client_ids_stay_a_permanent_second_layer(funded: Api, clock: FakeClock) -> None:
    body = {**pay(), "id": "order-77"}
    first = keyed(funded, "k-11", body)
    clock.advance(DAY_SECONDS + 1)
    again = keyed(funded, "k-11", body)  # the key has expired; the id has not
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


def test_expired_keys_are_purged_in_bounded_batches(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)
    settings = Settings(database_url=database_url)

    def render(outcomes: object) -> StoredResponse:
        return StoredResponse(201, b"{}", (("content-type", "application/json"),))

    async def scenario() -> tuple[int, int, int]:
        store = make_store(settings)
        await store.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100)
        writer.start()
        for i in range(5):
            await writer.submit(
                tenant_id,
                [CreateAccount(f"r{i}", "USD")],
                claim=Claim(f"purge-{i}", "fp"),
                answer=render,
            )
        day_later = writer_clock() + (DAY_SECONDS + 10) * 1_000_000
        before = await store.find_idempotency_key(tenant_id, "purge-0", writer_clock())
        purged = await purge_expired_keys(store, day_later, batch_max=2)
        after = await store.find_idempotency_key(tenant_id, "purge-0", writer_clock())
        await writer.stop()
        await store.close()
        return int(before is not None), purged, int(after is not None)

    found_before, purged, found_after = asyncio.run(scenario())
    assert found_before == 1
    assert purged >= 5
    assert found_after == 0


def test_a_key_still_executing_in_this_process_is_409_with_retry_after(
    database_url: str,
) -> None:
    tenant_id, _ = create_tenant(database_url)

    def render(outcomes: object) -> StoredResponse:
        return StoredResponse(201, b"{}", ())

    async def scenario() -> IdempotencyKeyInUse:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100)
        ledger = Ledger(store, writer, clock=lambda: 0, in_use_retry_after_seconds=1)
        claim = Claim("busy", fingerprint("POST", "/v1/accounts", b"{}"))
        command = CreateAccount("busy-1", "USD")
        # The writer is not running yet, so the first request stays in flight.
        ctx = WriteContext(answer=render, claim=claim)
        first = asyncio.ensure_future(ledger.create_account(tenant_id, command, ctx))
        # Until the first has looked the key up in the database and claimed it.
        for _ in range(1_000):
            if (tenant_id, "busy") in ledger._in_flight:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(IdempotencyKeyInUse) as in_use:
            await ledger.create_account(tenant_id, command, ctx)
        writer.start()
        assert (await first).replayed is False
        await writer.stop()
        await store.close()
        return in_use.value

    error = asyncio.run(scenario())
    assert status_of(error) == 409
    assert error.retry_after_seconds == 1


def test_duplicates_in_one_writer_batch_have_one_effect(database_url: str) -> None:
    tenant_id, _ = create_tenant(database_url)

    def render(outcomes: list[object]) -> StoredResponse:
        return StoredResponse(201, repr(outcomes[0]).encode(), ())

    async def scenario() -> list[object]:
        store = make_store(Settings(database_url=database_url))
        await store.open()
        writer = Writer(store, queue_commands_max=100, batch_commands_max=100)
        claim = Claim("twin", "same-fingerprint")
        jobs = [
            asyncio.ensure_future(
                writer.submit(
                    tenant_id, [CreateAccount(f"twin-{i}", "USD")], claim=claim, answer=render
                )
            )  # type: ignore[arg-type]
            for i in range(2)
        ]
        await asyncio.sleep(0)
        writer.start()
        results = await asyncio.gather(*jobs)
        account = await store.get_account(tenant_id, "twin-1")
        await writer.stop()
        await store.close()
        return [*results, account]

    first, second, never_created = asyncio.run(scenario())
    assert first.replayed is False  # type: ignore[attr-defined]
    assert second.replayed is True  # type: ignore[attr-defined]
    assert second.response == first.response  # type: ignore[attr-defined]
    assert never_created is None


def test_the_server_can_require_a_key_on_post(database_url: str) -> None:
    _, api_key = create_tenant(database_url)
    auth = {"Authorization": f"Bearer {api_key}"}
    settings = Settings(database_url=database_url, require_idempotency_key=True)
    with TestClient(create_app(settings)) as client:
        missing = client.post("/v1/accounts", json={"currency": "USD"}, headers=auth)
        keyed_ok = client.post(
            "/v1/accounts", json={"currency": "USD"}, headers={**auth, "Idempotency-Key": "req-1"}
        )
        account_id = keyed_ok.json()["id"]
        patch = client.patch(
            f"/v1/accounts/{account_id}", json={"metadata": {"a": "b"}}, headers=auth
        )
        read = client.get("/v1/accounts", headers=auth)
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_required"
    assert keyed_ok.status_code == 201
    assert patch.status_code == 200  # required on POST only
    assert read.status_code == 200
