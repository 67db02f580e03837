"""The web console in-process (docs/console.md): its session cookie, CSRF
defences, CSP, redirects to the login page, role checks and tenant isolation,
over the real app and databases. The browser tests (tests/browser) drive the
same pages in Chromium."""

from __future__ import annotations

import re
import secrets
import time

import pytest
from starlette.testclient import TestClient

from tally.console import CONSOLE_ROUTES
from tests.console_client import PASSWORD, Browser, console_login, fresh, hidden


def signup(client: TestClient) -> tuple[str, str]:
    email = f"console-{secrets.token_hex(5)}@example.com"
    r = client.post(
        "/v1/signup", json={"email": email, "password": PASSWORD, "tenant_name": "console"}
    )
    assert r.status_code == 201, r.text
    return email, r.json()["tenant_id"]


def bearer(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def join(client: TestClient, owner_email: str, role: str) -> str:
    """A member of ``role`` in the owner's tenant, with the password PASSWORD."""
    email = f"{role}-{secrets.token_hex(5)}@example.com"
    r = client.post(
        "/v1/members", json={"email": email, "role": role}, headers=bearer(client, owner_email)
    )
    assert r.status_code == 201, r.text
    token = r.json()["invitation_token"]
    r = client.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return email


@pytest.fixture
def owner(client: TestClient) -> Browser:
    email, _ = signup(client)
    return console_login(client, email)


def test_login_sets_a_strict_http_only_cookie_scoped_to_the_console(client: TestClient) -> None:
    email, _ = signup(client)
    browser = Browser(fresh(client), email)
    page = browser.get("/console/login")
    r = browser.post("/console/login", {**hidden(page.text), "email": email, "password": PASSWORD})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/accounts"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("tally_console="))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= attributes
    assert "secure" not in attributes  # plain HTTP here; see the https test


def test_the_cookie_is_secure_under_tls(database_url: str) -> None:
    from tally.api import create_app
    from tally.config import Settings

    app = create_app(Settings(database_url=database_url))
    with TestClient(app, base_url="https://testserver") as c:
        email, _ = signup(c)
        browser = Browser(fresh(c), email)
        page = browser.get("/console/login")
        login_cookie = page.headers["set-cookie"].lower()
        assert "secure" in login_cookie and "samesite=strict" in login_cookie
        r = browser.post(
            "/console/login",
            {**hidden(page.text), "email": email, "password": PASSWORD},
            origin="https://testserver",
        )
        assert r.status_code == 303, r.text
        cookie = next(x for x in r.headers.get_list("set-cookie") if x.startswith("tally_console="))
        assert "secure" in cookie.lower()


def test_a_wrong_password_is_refused_with_a_readable_page(client: TestClient) -> None:
    email, _ = signup(client)
    browser = Browser(fresh(client), email)
    page = browser.get("/console/login")
    r = browser.post(
        "/console/login",
        {**hidden(page.text), "email": email, "password": "not-the-password-at-all"},
    )
    assert r.status_code == 401
    assert "The email or password is not right." in r.text
    assert "tally_console=" not in r.headers.get("set-cookie", "")


def test_every_page_has_a_strict_csp_and_the_stylesheet_is_ours(owner: Browser) -> None:
    for path in ("/console/login", "/console/accounts", "/console/new-transfer"):
        r = owner.get(path)
        assert r.status_code == 200, (path, r.text)
        csp = r.headers["content-security-policy"]
        for directive in (
            "default-src 'none'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in csp, (path, csp)
        assert "script-src" not in csp and "unsafe" not in csp, csp
        assert "<script" not in r.text and "style=" not in r.text
        assert '<link rel="stylesheet" href="/console/console.css">' in r.text
    css = owner.get("/console/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_pages_without_a_session_redirect_to_the_login_page(client: TestClient) -> None:
    jar = fresh(client)
    for route in CONSOLE_ROUTES:
        if not route.auth:
            continue
        path = route.path.replace("{id}", "x")
        r = jar.request(route.method, path, follow_redirects=False)
        assert r.status_code == 303, (route.method, path, r.status_code)
        assert r.headers["location"].startswith("/console/login?next="), r.headers
    jar.cookies.set("tally_console", "forged|token", path="/console")
    r = jar.get("/console/accounts", follow_redirects=False)
    assert r.status_code == 303


def test_a_form_without_the_csrf_token_or_from_another_origin_is_refused(
    owner: Browser, client: TestClient
) -> None:
    form = {"currency": "USD", "id": "csrf-probe"}
    no_token = owner.post("/console/new-account", form)
    assert no_token.status_code == 403
    page = owner.get("/console/new-account")
    r = owner.post("/console/new-account", {**hidden(page.text), "csrf": "0" * 64, **form})
    assert r.status_code == 403
    for origin in ("https://evil.example", "null", None):
        r = owner.submit("/console/new-account", "/console/new-account", form, origin=origin)
        assert r.status_code == 403, (origin, r.text)
    r = owner.get("/console/accounts/csrf-probe")
    assert r.status_code == 404  # none of them made the account


def test_a_form_with_the_token_from_the_same_origin_works(owner: Browser) -> None:
    r = owner.submit("/console/new-account", "/console/new-account", {"currency": "eur"})
    assert r.status_code == 303, r.text
    account = owner.get(r.headers["location"])
    assert account.status_code == 200 and "EUR" in account.text


def test_logout_ends_the_session_on_the_server(owner: Browser, client: TestClient) -> None:
    stolen = owner.cookies.get("tally_console")
    assert stolen
    r = owner.submit("/console/logout", "/console/accounts", {})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    # The old cookie, replayed, is refused: the session ended, not just the cookie.
    thief = fresh(client)
    thief.cookies.set("tally_console", stolen, path="/console")
    again = thief.get("/console/accounts", follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/login")


def test_a_member_without_admin_sees_no_admin_page(client: TestClient, owner: Browser) -> None:
    for role in ("operator", "viewer"):
        person = console_login(client, join(client, owner.email, role))
        accounts = person.get("/console/accounts")
        assert accounts.status_code == 200
        assert "/console/api-keys" not in accounts.text
        for path in ("/console/api-keys", "/console/members", "/console/audit"):
            r = person.get(path)
            assert r.status_code == 403, (role, path)
            assert "Not allowed" in r.text
    viewer = console_login(client, join(client, owner.email, "viewer"))
    r = viewer.get("/console/new-transfer")
    assert r.status_code == 403


def test_an_admin_creates_a_key_sees_its_secret_once_and_revokes_it(
    owner: Browser, client: TestClient
) -> None:
    r = owner.submit(
        "/console/api-keys", "/console/api-keys", {"name": "ci", "scope:accounts:read": "on"}
    )
    assert r.status_code == 201, r.text
    secret = re.search(r'id="new-secret" readonly value="([^"]+)"', r.text)
    assert secret is not None
    key = {"Authorization": f"Bearer {secret.group(1)}"}
    assert client.get("/v1/accounts", headers=key).status_code == 200
    listing = owner.get("/console/api-keys")
    assert secret.group(1) not in listing.text
    key_id = re.search(r"/console/api-keys/([^/]+)/revoke", listing.text)
    assert key_id is not None
    revoke = owner.submit(f"/console/api-keys/{key_id.group(1)}/revoke", "/console/api-keys", {})
    assert revoke.status_code == 303
    assert client.get("/v1/accounts", headers=key).status_code == 401


def test_another_tenants_objects_are_not_found(client: TestClient, owner: Browser) -> None:
    made = owner.submit(
        "/console/new-account", "/console/new-account", {"currency": "USD", "id": "mine"}
    )
    assert made.status_code == 303
    email, _ = signup(client)
    stranger = console_login(client, email)
    assert stranger.get("/console/accounts/mine").status_code == 404
    assert "mine" not in stranger.get("/console/accounts?q=mi").text
    r = stranger.submit(
        "/console/new-transfer",
        "/console/new-transfer",
        {"debit_account_id": "mine", "credit_account_id": "mine2", "amount": "1"},
    )
    assert r.status_code == 422 and "Debit account not found" in r.text


def test_a_resubmitted_transfer_form_makes_one_transfer(owner: Browser, client: TestClient) -> None:
    for account in ("dc-a", "dc-b"):
        r = owner.submit(
            "/console/new-account", "/console/new-account", {"currency": "USD", "id": account}
        )
        assert r.status_code == 303, r.text
    page = owner.get("/console/new-transfer")
    fields = {
        **hidden(page.text),
        "debit_account_id": "dc-a",
        "credit_account_id": "dc-b",
        "amount": "1,250",
    }
    answers = [owner.post("/console/new-transfer", fields) for _ in range(3)]
    assert {a.status_code for a in answers} == {303}
    assert len({a.headers["location"] for a in answers}) == 1
    account = owner.get("/console/accounts/dc-b")
    assert 'id="balance-posted">1,250<' in account.text
    assert account.text.count("/console/transfers/trf_") == 1
    assert "<svg" in account.text


def test_a_pending_transfer_is_posted_and_a_second_post_is_refused_readably(
    owner: Browser,
) -> None:
    for account in ("pp-a", "pp-b"):
        owner.submit(
            "/console/new-account", "/console/new-account", {"currency": "USD", "id": account}
        )
    r = owner.submit(
        "/console/new-transfer",
        "/console/new-transfer",
        {
            "debit_account_id": "pp-a",
            "credit_account_id": "pp-b",
            "amount": "40",
            "pending": "true",
        },
    )
    assert r.status_code == 303
    hold = r.headers["location"]
    page = owner.get(hold)
    assert 'id="transfer-status">pending<' in page.text
    post = owner.submit(f"{hold}/post", hold, {"amount": "30"})
    assert post.status_code == 303, post.text
    assert 'id="transfer-status">posted<' in owner.get(post.headers["location"]).text
    # The page of the hold no longer offers post or void; a stale form is refused in words.
    stale = owner.submit(f"{hold}/void", post.headers["location"], {})
    assert stale.status_code == 409, stale.text
    assert "Pending transfer already posted" in stale.text
    assert 'id="balance-posted">30<' in owner.get("/console/accounts/pp-b").text


def test_bad_input_is_a_readable_page_never_a_500(owner: Browser) -> None:
    r = owner.submit(
        "/console/new-transfer",
        "/console/new-transfer",
        {"debit_account_id": "a b", "credit_account_id": "x", "amount": "-3"},
    )
    assert r.status_code == 422 and "An id is 1-64" in r.text
    for path in (
        "/console/accounts?cursor=garbage",
        "/console/accounts?meta_value=x",
        "/console/events?after=-1",
        "/console/transfers/nowhere",
        "/console/accounts/%00",
    ):
        r = owner.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        assert 'role="alert"' in r.text, path


def test_accounts_search_by_prefix_currency_and_metadata_with_keyset_pages(
    owner: Browser,
) -> None:
    for i in range(3):
        owner.submit(
            "/console/new-account",
            "/console/new-account",
            {"currency": "GBP", "id": f"shop_{i}", "metadata": f"region=north\nn={i}"},
        )
    owner.submit(
        "/console/new-account", "/console/new-account", {"currency": "JPY", "id": "shop_x"}
    )
    assert owner.get("/console/accounts?q=shop_").text.count('href="/console/accounts/shop_') == 4
    assert owner.get("/console/accounts?currency=gbp").text.count("GBP") == 3
    meta = owner.get("/console/accounts?meta_key=n&meta_value=1").text
    assert "shop_1" in meta and "shop_0" not in meta


def test_login_attempts_are_audited_and_rate_limited(database_url: str) -> None:
    from tally.api import create_app
    from tally.config import Settings

    settings = Settings(database_url=database_url, login_limit_per_email_burst=2)
    with TestClient(create_app(settings)) as c:
        email, _ = signup(c)
        browser = Browser(fresh(c), email)
        page = browser.get("/console/login")
        statuses = []
        for _ in range(3):
            r = browser.post(
                "/console/login",
                {**hidden(page.text), "email": email, "password": "wrong-wrong-wrong"},
            )
            statuses.append(r.status_code)
        assert statuses == [401, 401, 429]
        # The same bucket as the REST login: it is spent for both.
        r = c.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 429


def test_console_logins_and_forms_are_in_the_audit_log(client: TestClient) -> None:
    email, _ = signup(client)
    stranger = Browser(fresh(client), email)
    page = stranger.get("/console/login")
    stranger.post(
        "/console/login", {**hidden(page.text), "email": email, "password": "wrong-wrong-wrong"}
    )
    person = console_login(client, email)
    person.submit("/console/new-account", "/console/new-account", {"currency": "USD", "id": "aud"})
    person.submit("/console/new-account", "/console/new-account", {"currency": "USD"}, origin=None)
    audit = person.get("/console/audit")
    assert audit.status_code == 200
    headers = bearer(client, email)
    deadline = time.monotonic() + 10
    while True:  # refusals are appended within the appender's flush
        rows = client.get("/v1/audit-events", headers=headers).json()["data"]
        seen = [(r["action"], r["status"], r["code"]) for r in rows]
        if ("createAccount", 403, "forbidden") in seen or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("login", 401, "unauthenticated") in seen
    assert ("login", 200, None) in seen
    assert ("createAccount", 201, None) in seen
    assert ("createAccount", 403, "forbidden") in seen


def test_an_admin_invites_a_member_changes_their_role_and_disables_them(
    owner: Browser, client: TestClient
) -> None:
    email = f"invitee-{secrets.token_hex(4)}@example.com"
    r = owner.submit("/console/members", "/console/members", {"email": email, "role": "viewer"})
    assert r.status_code == 201, r.text
    token = re.search(r'id="invite-token" readonly value="([^"]+)"', r.text)
    assert token is not None
    accepted = client.post(
        "/v1/auth/accept-invitation", json={"token": token.group(1), "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    member_id = accepted.json()["id"]
    member = console_login(client, email)
    assert member.get("/console/new-transfer").status_code == 403  # a viewer
    r = owner.submit(f"/console/members/{member_id}/role", "/console/members", {"role": "operator"})
    assert r.status_code == 303, r.text
    assert member.get("/console/new-transfer").status_code == 200  # the very next page
    r = owner.submit(f"/console/members/{member_id}/disable", "/console/members", {})
    assert r.status_code == 303, r.text
    assert member.get("/console/accounts").status_code == 303  # signed out at once
    listing = owner.get("/console/members").text
    assert email in listing and "disabled" in listing
    again = owner.submit("/console/members", "/console/members", {"email": email, "role": "viewer"})
    assert again.status_code == 409 and "exists already" in again.text
    audit = owner.get("/console/audit").text
    for action in ("inviteMember", "updateMember", "disableMember"):
        assert action in audit


def test_the_events_page_runs_only_its_live_feed_script_which_starts_after_the_last_event(
    owner: Browser, client: TestClient
) -> None:
    headers = bearer(client, owner.email)
    for account_id in ("feed-a", "feed-b"):
        r = client.post("/v1/accounts", json={"id": account_id, "currency": "USD"}, headers=headers)
        assert r.status_code == 201, r.text
    page = owner.get("/console/events")
    assert page.status_code == 200
    csp = {d.strip() for d in page.headers["content-security-policy"].split(";")}
    assert {"script-src 'self'", "connect-src 'self'", "default-src 'none'"} <= csp
    assert "unsafe" not in page.headers["content-security-policy"]
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts == ['<script src="/console/live.js" defer>']  # a file, nothing inline
    assert 'data-stream="/console/events/stream?after=2"' in page.text
    js = owner.get("/console/live.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # values go in as text, never as markup


def test_the_live_feed_is_the_tenants_event_stream_behind_the_session_cookie(
    owner: Browser, client: TestClient
) -> None:
    headers = bearer(client, owner.email)
    for account_id in ("s-a", "s-b", "s-c"):
        r = client.post("/v1/accounts", json={"id": account_id, "currency": "USD"}, headers=headers)
        assert r.status_code == 201, r.text
    # The stream ends after TALLY_EVENTS_STREAM_SECONDS_MAX in process (tests/conftest.py).
    r = owner.get("/console/events/stream", params={"after": "1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert re.findall(r"^id: (\d+)$", r.text, re.M) == ["2", "3"]
    assert "event: account.created" in r.text
    resumed = owner.get("/console/events/stream", headers={"Last-Event-ID": "2"})
    assert re.findall(r"^id: (\d+)$", resumed.text, re.M) == ["3"]
    # Without a session: the login page, no stream (EventSource gives up on it).
    r = fresh(client).get("/console/events/stream", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    # Another tenant's owner sees only their own events.
    other_email, _ = signup(client)
    theirs = console_login(client, other_email).get("/console/events/stream", params={"after": "0"})
    assert "s-a" not in theirs.text
