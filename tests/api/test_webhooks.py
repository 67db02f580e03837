"""The webhook endpoints API (api.md §8) in-process: create, read, update, rotate,
delete, deliveries; refusals as problem details; each write audited."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

PUBLIC_URL = "https://1.1.1.1/tally-hooks"  # a public literal: no lookup, never called here


def create(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"url": PUBLIC_URL, "event_types": ["transfer.created"], **fields}
    r = api.post("/v1/webhook-endpoints", body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = r.json()
    assert problem["code"] == code, problem
    return problem


def test_create_shows_the_secret_once_and_reads_never(api: Api) -> None:
    created = create(api, description="orders service", event_types=["*"])
    endpoint, secret = created["webhook_endpoint"], created["secret"]
    assert secret.startswith("whsec_")
    assert endpoint["object"] == "webhook_endpoint"
    assert endpoint["url"] == PUBLIC_URL
    assert endpoint["event_types"] == ["*"]
    assert endpoint["status"] == "enabled"
    assert endpoint["disabled_reason"] is None
    assert endpoint["previous_secret_expires_at"] is None
    got = api.get(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert got.status_code == 200, got.text
    assert got.json() == endpoint
    listed = api.get("/v1/webhook-endpoints")
    assert [e["id"] for e in listed.json()["data"]] == [endpoint["id"]]
    for r in (got, listed):
        assert secret not in r.text
        assert secret.removeprefix("whsec_") not in r.text


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/hooks",  # a name that resolves to 127.0.0.1
        "https://127.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://10.0.0.5/hooks",
        "https://192.168.1.20/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://224.0.0.1/hooks",
        "https://0.0.0.0/hooks",
        "http://1.1.1.1/hooks",  # https only
        "https://user:secret@1.1.1.1/hooks",
        "https://no-such-host.invalid/hooks",
    ],
)
def test_a_url_tally_must_not_call_is_refused_with_url_not_allowed(api: Api, url: str) -> None:
    r = api.post("/v1/webhook-endpoints", {"url": url, "event_types": ["*"]})
    assert_problem(r, 422, "url_not_allowed")
    assert api.get("/v1/webhook-endpoints").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://1.1.1.1/x", "event_types": ["*"]}, "url"),
        ({"url": PUBLIC_URL, "event_types": []}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["money.moved"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["*", "*"]}, "event_types"),
        ({"url": PUBLIC_URL, "event_types": ["*"], "description": "x" * 501}, "description"),
        ({"url": PUBLIC_URL, "event_types": ["*"], "secret": "whsec_mine"}, "secret"),
        ({"url": PUBLIC_URL, "event_types": ["*"], "status": "disabled"}, "status"),
        ({"event_types": ["*"]}, "url"),
    ],
)
def test_a_malformed_create_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(api.post("/v1/webhook-endpoints", body), 422, "validation_error")
    assert [e["field"].partition("[")[0] for e in problem["errors"]] == [field], problem


def test_update_changes_what_it_names_and_disabling_says_who(api: Api) -> None:
    endpoint = create(api)["webhook_endpoint"]
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    r = api.patch(path, {"event_types": ["account.created", "transfer.created"]})
    assert r.status_code == 200, r.text
    assert r.json()["event_types"] == ["account.created", "transfer.created"]
    assert r.json()["url"] == PUBLIC_URL
    r = api.patch(path, {"status": "disabled", "description": "paused"})
    assert (r.json()["status"], r.json()["disabled_reason"]) == ("disabled", "user")
    assert r.json()["description"] == "paused"
    r = api.patch(path, {"status": "enabled"})
    assert (r.json()["status"], r.json()["disabled_reason"]) == ("enabled", None)
    assert_problem(api.patch(path, {"url": "https://localhost/x"}), 422, "url_not_allowed")
    assert_problem(api.patch(path, {"status": "gone"}), 422, "validation_error")
    assert api.get(path).json()["url"] == PUBLIC_URL


def test_rotating_the_secret_shows_the_new_one_and_when_the_old_stops(api: Api) -> None:
    created = create(api)
    path = f"/v1/webhook-endpoints/{created['webhook_endpoint']['id']}/rotate-secret"
    r = api.post(path, {"overlap_seconds": 3600})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert rotated["webhook_endpoint"]["previous_secret_expires_at"] is not None
    r = api.post(path, {"overlap_seconds": 0})
    assert r.json()["webhook_endpoint"]["previous_secret_expires_at"] is None
    r = api.post(path)  # no body: the default overlap
    assert r.status_code == 200, r.text
    assert r.json()["webhook_endpoint"]["previous_secret_expires_at"] is not None
    assert_problem(api.post(path, {"overlap_seconds": -1}), 422, "validation_error")


def test_delete_removes_the_endpoint_and_a_second_delete_is_404(api: Api) -> None:
    endpoint = create(api)["webhook_endpoint"]
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    assert api.request("DELETE", path).status_code == 204
    assert_problem(api.get(path), 404, "not_found")
    assert_problem(api.request("DELETE", path), 404, "not_found")
    assert_problem(api.get(f"{path}/deliveries"), 404, "not_found")


def test_another_tenants_endpoint_is_not_there(api: Api, other_api: Api) -> None:
    endpoint = create(api)["webhook_endpoint"]
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"status": "disabled"}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", {}),
        ("GET", "/deliveries", None),
        ("POST", "/deliveries/msg_x/replay", None),
    ):
        r = other_api.request(method, path + suffix, json=body)
        assert_problem(r, 404, "not_found")
    assert other_api.get("/v1/webhook-endpoints").json()["data"] == []
    assert api.get(path).json() == endpoint


def test_lists_page_by_cursor(api: Api) -> None:
    ids = [create(api)["webhook_endpoint"]["id"] for _ in range(3)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(3):
        page = api.get("/v1/webhook-endpoints", params=params).json()
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == sorted(ids)
    endpoint = f"/v1/webhook-endpoints/{ids[0]}/deliveries"
    assert api.get(endpoint).json() == {"data": [], "has_more": False, "next_cursor": None}
    assert_problem(api.get(endpoint, params={"status": "lost"}), 422, "validation_error")
    assert_problem(api.get(endpoint, params={"cursor": "nope"}), 422, "validation_error")


def test_each_write_is_in_the_audit_log(api: Api) -> None:
    endpoint = create(api)["webhook_endpoint"]
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    api.patch(path, {"description": "x"})
    api.post(f"{path}/rotate-secret", {})
    api.request("DELETE", path)
    events = api.get("/v1/audit-events", params={"limit": 1000}).json()["data"]
    actions = [(e["action"], e["status"]) for e in events if e["object_id"] == endpoint["id"]]
    assert actions == [
        ("createWebhookEndpoint", 201),
        ("updateWebhookEndpoint", 200),
        ("rotateWebhookEndpointSecret", 200),
        ("deleteWebhookEndpoint", 204),
    ]
