"""API2:2023 Broken Authentication.

What this module proves:

- forged access tokens are refused with 401 ``unauthenticated`` and
  ``WWW-Authenticate: Bearer``: ``alg: none`` (any spelling), HS256 keyed with our
  public key, other algorithms, an attacker's Ed25519 key (with our kid, an
  unknown kid, an embedded ``jwk`` or a ``jku``), a tampered payload or
  signature, and, signed with our real key, a wrong audience or issuer, a
  missing required claim, an expiry in the past, an issue time in the future, a
  session that is not the subject's, a tenant that is not the session's;
- a token expires when the clock passes ``exp`` (FakeClock), and refreshing then
  works until the session itself ends;
- revocation takes effect on the very next request: logout, password change
  (other sessions only), a disabled member, a refresh token used twice (the
  whole session ends), a changed role, a revoked API key;
- a failed login answers the same status and body, in comparable time (both
  paths run Argon2), for an unknown email, a wrong password, a disabled user, an
  invited user who has not chosen a password, and an address that is not one;
- passwords follow the policy everywhere they are set, are stored as Argon2id
  hashes, and refresh tokens, invitation tokens and API key secrets are stored
  only as hashes; an invitation is single-use, expires, and dies with a member
  disabled before accepting it; a credential is read only from the
  Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from tally.identity.tokens import REQUIRED_CLAIMS
from tests.conftest import FakeClock
from tests.console_client import Browser, Jar, console_login
from tests.security.conftest import (
    OTHER_PASSWORD,
    PASSWORD,
    Db,
    Person,
    Tenant,
    assert_problem,
    invite,
    join,
    login,
    make_key,
    new_database,
    serve,
    signup,
    unique_email,
)


def assert_unauthenticated(r: httpx.Response) -> None:
    assert_problem(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")


def works(person_or_token: Person | str, client: TestClient | None = None) -> bool:
    """Whether the access token is accepted right now (GET /v1/me)."""
    if isinstance(person_or_token, Person):
        client, token = person_or_token.client, person_or_token.token
    else:
        token = person_or_token
    assert client is not None
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 401:
        assert_unauthenticated(r)
        return False
    assert r.status_code == 200, r.text
    return True


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    return client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def secret_of(api_key: str) -> str:
    """The secret of ``tly_<16-character id>_<secret>`` (which may itself hold "_")."""
    return api_key[len("tly_") + 16 + 1 :]


# -- forging tokens --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


@dataclass
class Forge:
    """What an attacker (or, for the claim checks, our own key) can sign with."""

    token: str  # the victim's real access token
    claims: dict[str, Any]
    header: dict[str, Any]
    private_key: Any  # our real signing key, from the database
    public_pem: bytes
    other_claims: dict[str, Any]  # another user's real claims (tenant B's owner)

    def real(self, payload: dict[str, Any], **header: Any) -> str:
        """Signed with our real key: only the claims can make it wrong."""
        return jwt.encode(
            payload,
            self.private_key,
            algorithm="EdDSA",
            headers={"kid": self.header["kid"], **header},
        )

    def claims_with(self, **changes: Any) -> dict[str, Any]:
        return {**self.claims, **changes}

    def claims_without(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.claims.items() if k != name}


def attacker_ed25519(header: dict[str, Any], payload: dict[str, Any], **extra: Any) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return jwt.encode(payload, key, algorithm="EdDSA", headers={**header, **extra})


def tampered_signature(token: str) -> str:
    """Change a character in the middle of the signature: the last character of a
    base64url signature may only carry padding bits, and would change nothing."""
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def with_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    return f"{header}.{b64(json.dumps(payload).encode())}.{signature}"


def none_token(f: Forge, alg: str) -> str:
    return compact({**f.header, "alg": alg}, f.claims, lambda _: b"")


def hmac_token(f: Forge, key: bytes) -> str:
    header = {**f.header, "alg": "HS256"}
    return compact(header, f.claims, lambda data: hmac.new(key, data, hashlib.sha256).digest())


def raw_public_key(f: Forge) -> bytes:
    public = serialization.load_pem_public_key(f.public_pem)
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def rsa_token(f: Forge) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(f.claims, key, algorithm="RS256", headers={"kid": f.header["kid"]})


def es256_token(f: Forge) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(f.claims, key, algorithm="ES256", headers={"kid": f.header["kid"]})


def embedded_jwk_token(f: Forge) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    return jwt.encode(f.claims, key, algorithm="EdDSA", headers={"jwk": jwk})


def now_s() -> int:
    return int(time.time())


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg_none": lambda f: none_token(f, "none"),
    "alg_None": lambda f: none_token(f, "None"),
    "alg_NONE": lambda f: none_token(f, "NONE"),
    "alg_none_keeping_the_real_signature": lambda f: (
        compact({**f.header, "alg": "none"}, f.claims, lambda _: b"").rstrip(".")
        + "."
        + f.token.rpartition(".")[2]
    ),
    "hs256_keyed_with_our_public_key_pem": lambda f: hmac_token(f, f.public_pem),
    "hs256_keyed_with_our_raw_public_key": lambda f: hmac_token(f, raw_public_key(f)),
    "hs256_keyed_with_the_empty_string": lambda f: hmac_token(f, b""),
    "rs256_attacker_key": rsa_token,
    "es256_attacker_key": es256_token,
    "eddsa_attacker_key_with_our_kid": lambda f: attacker_ed25519(f.header, f.claims),
    "eddsa_attacker_key_with_an_unknown_kid": lambda f: attacker_ed25519(
        f.header, f.claims, kid="kid_01ATTACKER"
    ),
    "eddsa_attacker_key_embedded_as_jwk": embedded_jwk_token,
    "eddsa_attacker_key_behind_a_jku": lambda f: attacker_ed25519(
        f.header, f.claims, kid="attacker", jku="https://attacker.example/jwks.json"
    ),
    "kid_path_traversal": lambda f: attacker_ed25519(f.header, f.claims, kid="../../dev/null"),
    "kid_sql_injection": lambda f: attacker_ed25519(f.header, f.claims, kid="' OR '1'='1"),
    "kid_not_a_string": lambda f: compact({**f.header, "kid": 1}, f.claims, f.private_key.sign),
    "payload_tampered_to_another_user": lambda f: with_payload(
        f.token, f.claims_with(sub=f.other_claims["sub"], tid=f.other_claims["tid"])
    ),
    "payload_tampered_with_a_longer_life": lambda f: with_payload(
        f.token, f.claims_with(exp=f.claims["exp"] + 86_400 * 365)
    ),
    "signature_tampered": lambda f: tampered_signature(f.token),
    "signature_truncated": lambda f: f.token[:-10],
    "signature_empty": lambda f: f.token.rpartition(".")[0] + ".",
    "signature_of_another_token": lambda f: with_payload(f.token, f.other_claims),
    "two_parts_only": lambda f: f.token.rpartition(".")[0],
    "wrong_audience": lambda f: f.real(f.claims_with(aud="another-api")),
    "audience_list_without_ours": lambda f: f.real(f.claims_with(aud=["a", "b"])),
    "wrong_issuer": lambda f: f.real(f.claims_with(iss="not-tally")),
    **{
        f"missing_{claim}": (lambda f, claim=claim: f.real(f.claims_without(claim)))
        for claim in REQUIRED_CLAIMS
    },
    "missing_tid": lambda f: f.real(f.claims_without("tid")),
    "expired_a_second_ago": lambda f: f.real(f.claims_with(exp=now_s() - 1)),
    "expired_long_ago": lambda f: f.real(f.claims_with(iat=now_s() - 7200, exp=now_s() - 3600)),
    "expiry_not_a_number": lambda f: f.real(f.claims_with(exp="9999999999")),
    "issued_in_the_future": lambda f: f.real(f.claims_with(iat=now_s() + 3600, exp=now_s() + 4000)),
    "another_users_session": lambda f: f.real(f.claims_with(sid=f.other_claims["sid"])),
    "another_tenant": lambda f: f.real(f.claims_with(tid=f.other_claims["tid"])),
    "another_users_subject": lambda f: f.real(f.claims_with(sub=f.other_claims["sub"])),
}


@pytest.fixture(scope="module")
def forge(tenant: Tenant, stranger: Tenant, db: Db) -> Forge:
    token = tenant.owner.token
    header = jwt.get_unverified_header(token)
    rows = db.fetch(
        "SELECT private_key_pem, public_key_pem FROM signing_keys WHERE kid = $1", header["kid"]
    )
    private_pem, public_pem = rows[0]
    return Forge(
        token=token,
        claims=jwt.decode(token, options={"verify_signature": False}),
        header=header,
        private_key=serialization.load_pem_private_key(private_pem.encode(), password=None),
        public_pem=public_pem.encode(),
        other_claims=jwt.decode(stranger.owner.token, options={"verify_signature": False}),
    )


def test_the_real_token_and_a_token_signed_with_our_key_and_right_claims_work(
    forge: Forge, client: TestClient
) -> None:
    # The controls: without them, every forgery below could be refused for a reason
    # that has nothing to do with what it forges.
    assert works(forge.token, client)
    assert works(forge.real(forge.claims), client)


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_access_token_is_refused(forge: Forge, client: TestClient, name: str) -> None:
    token = FORGERIES[name](forge)
    assert token != forge.token
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/members"), ("POST", "/v1/members")):
        body = {"email": unique_email("forged"), "role": "admin"} if method == "POST" else None
        r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert_unauthenticated(r)
        assert forge.token not in r.text


def test_other_secrets_are_not_access_tokens(tenant: Tenant, client: TestClient) -> None:
    _, _, invitation = invite(tenant.owner, "viewer")
    key_secret = secret_of(tenant.keys["all"].token)
    for token in (tenant.owner.refresh_token, invitation, key_secret):
        r = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert_unauthenticated(r)


def test_a_credential_is_read_only_from_the_authorization_header(
    tenant: Tenant, client: TestClient
) -> None:
    token, key = tenant.owner.token, tenant.keys["all"].token
    for where in (
        {"params": {"access_token": token}},
        {"params": {"api_key": key}},
        {"headers": {"X-Api-Key": key}},
        {"headers": {"Cookie": f"access_token={token}; session={token}"}},
    ):
        r = client.get("/v1/me", **where)  # type: ignore[arg-type]
        assert_unauthenticated(r)


# -- expiry -------------------------------------------------------------------------------


def test_an_access_token_expires_with_the_clock_and_refresh_works_until_the_session_ends(
    database_url: str,
) -> None:
    clock, ttl = FakeClock(), 600
    with (
        new_database(database_url) as url,
        serve(url, clock=clock, access_token_ttl_seconds=ttl) as c,
    ):
        person = signup(c, "expiry")
        assert works(person)
        clock.advance(ttl - 5)
        assert works(person)
        clock.advance(6)
        r = c.get("/v1/me", headers=person.headers)
        assert_unauthenticated(r)
        assert "expired" in r.json()["detail"]

        r = refresh(c, person.refresh_token)
        assert r.status_code == 200, r.text
        assert works(r.json()["access_token"], c)

        clock.advance(31 * 86_400)  # past the session's 30 days
        assert_unauthenticated(refresh(c, r.json()["refresh_token"]))


# -- revocation ---------------------------------------------------------------------------


def test_logout_ends_this_session_at_once_and_only_this_one(client: TestClient) -> None:
    first = signup(client, "logout")
    second = login(client, first.email, PASSWORD)
    r = first.post("/v1/auth/logout")
    assert r.status_code == 204, r.text
    assert not works(first)
    assert_unauthenticated(refresh(client, first.refresh_token))
    assert_unauthenticated(first.post("/v1/auth/logout"))
    assert works(second)
    assert refresh(client, second.refresh_token).status_code == 200


def test_a_password_change_ends_the_other_sessions_at_once(client: TestClient) -> None:
    here = signup(client, "password")
    elsewhere = login(client, here.email, PASSWORD)
    r = here.post(
        "/v1/users/me/password", {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    )
    assert r.status_code == 204, r.text
    assert not works(elsewhere)
    assert_unauthenticated(refresh(client, elsewhere.refresh_token))
    assert works(here)
    assert refresh(client, here.refresh_token).status_code == 200
    bad = client.post("/v1/auth/login", json={"email": here.email, "password": PASSWORD})
    assert_unauthenticated(bad)
    assert works(login(client, here.email, OTHER_PASSWORD))


def test_a_password_change_needs_the_current_password_and_a_user(
    tenant: Tenant, client: TestClient
) -> None:
    person = tenant.people["viewer"]
    r = person.post(
        "/v1/users/me/password",
        {"current_password": OTHER_PASSWORD, "new_password": "a-Brand-new-passphrase-7"},
    )
    problem = assert_problem(r, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["current_password"]
    assert works(person)
    body = {"current_password": PASSWORD, "new_password": OTHER_PASSWORD}
    for key in tenant.keys.values():  # an API key has no password and no session
        assert_problem(key.post("/v1/users/me/password", body), 403, "forbidden")
        assert_problem(key.post("/v1/auth/logout"), 403, "forbidden")


def test_a_disabled_member_is_locked_out_at_once(tenant: Tenant, client: TestClient) -> None:
    member = join(tenant.owner, "operator")
    r = tenant.owner.delete(f"/v1/members/{member.user_id}")
    assert r.status_code == 204, r.text
    assert not works(member)
    assert_unauthenticated(refresh(client, member.refresh_token))
    r = client.post("/v1/auth/login", json={"email": member.email, "password": PASSWORD})
    assert_unauthenticated(r)


def test_a_reused_refresh_token_ends_the_whole_session(client: TestClient) -> None:
    victim = signup(client, "reuse")
    other_session = login(client, victim.email, PASSWORD)
    stolen = victim.refresh_token
    r = refresh(client, stolen)
    assert r.status_code == 200, r.text
    new_access, new_refresh = r.json()["access_token"], r.json()["refresh_token"]
    assert works(new_access, client)

    assert_unauthenticated(refresh(client, stolen))  # the thief (or the victim) replays it
    assert not works(new_access, client)
    assert not works(victim)
    assert_unauthenticated(refresh(client, new_refresh))
    assert works(other_session)  # another login is another family


def test_a_changed_role_applies_to_the_very_next_request(tenant: Tenant) -> None:
    member = join(tenant.owner, "admin")
    assert member.get("/v1/members").status_code == 200
    r = tenant.owner.patch(f"/v1/members/{member.user_id}", {"role": "viewer"})
    assert r.status_code == 200, r.text
    assert_problem(member.get("/v1/members"), 403, "forbidden")
    assert_problem(member.post("/v1/accounts", {"currency": "USD"}), 403, "forbidden")
    assert member.get("/v1/me").json()["role"] == "viewer"


def test_a_revoked_api_key_fails_on_the_very_next_request(tenant: Tenant) -> None:
    key = make_key(tenant.owner, "to-revoke", ["accounts:read"])
    keep = make_key(tenant.owner, "to-keep", ["accounts:read"])
    assert key.get("/v1/accounts").status_code == 200
    r = tenant.owner.delete(f"/v1/api-keys/{key.key_id}")
    assert r.status_code == 204, r.text
    assert_unauthenticated(key.get("/v1/accounts"))
    assert_unauthenticated(key.get("/v1/me"))
    assert keep.get("/v1/accounts").status_code == 200
    assert tenant.owner.delete(f"/v1/api-keys/{key.key_id}").status_code == 204
    assert_unauthenticated(key.get("/v1/accounts"))
    listed = {k["id"]: k for k in tenant.owner.get("/v1/api-keys").json()["data"]}
    assert listed[key.key_id]["revoked_at"] is not None


# -- login: one answer, one cost ----------------------------------------------------------


@pytest.fixture(scope="module")
def login_cases(tenant: Tenant) -> dict[str, dict[str, str]]:
    """A login body per way of failing; each must look the same from outside."""
    disabled = join(tenant.owner, "viewer")
    assert tenant.owner.delete(f"/v1/members/{disabled.user_id}").status_code == 204
    _, invited_email, _ = invite(tenant.owner, "viewer")
    return {
        "unknown_email": {"email": unique_email("nobody"), "password": PASSWORD},
        "wrong_password": {"email": tenant.people["viewer"].email, "password": OTHER_PASSWORD},
        "disabled_user": {"email": disabled.email, "password": PASSWORD},
        "invited_user": {"email": invited_email, "password": PASSWORD},
        "not_an_email": {"email": "not an address", "password": PASSWORD},
    }


def comparable(r: httpx.Response) -> tuple[int, dict[str, Any], str]:
    body: dict[str, Any] = r.json()
    body.pop("request_id", None)
    return r.status_code, body, r.headers.get("www-authenticate", "")


def test_a_failed_login_answers_the_same_whatever_failed(
    client: TestClient, login_cases: dict[str, dict[str, str]]
) -> None:
    answers = {
        name: comparable(client.post("/v1/auth/login", json=body))
        for name, body in login_cases.items()
    }
    first = answers["unknown_email"]
    assert first[0] == 401
    assert first[1]["code"] == "unauthenticated"
    for name, answer in answers.items():
        assert answer == first, name


def test_a_failed_login_takes_comparable_time_whatever_failed(
    client: TestClient, login_cases: dict[str, dict[str, str]]
) -> None:
    """Both paths run Argon2. Medians of interleaved rounds, with a generous factor,
    so a loaded two-core machine does not make it flaky; the cheap control (a login
    refused by the schema, before any hashing) shows the factor still tells."""
    kinds = ["unknown_email", "wrong_password", "disabled_user"]
    timings: dict[str, list[float]] = {k: [] for k in [*kinds, "control"]}
    control = {"email": "x@example.com", "password": PASSWORD, "tenant_id": "t"}
    for _ in range(5):
        for kind in kinds:
            started = time.perf_counter()
            r = client.post("/v1/auth/login", json=login_cases[kind])
            timings[kind].append(time.perf_counter() - started)
            assert r.status_code == 401
        started = time.perf_counter()
        assert client.post("/v1/auth/login", json=control).status_code == 422
        timings["control"].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    slowest, fastest = max(medians[k] for k in kinds), min(medians[k] for k in kinds)
    assert slowest < 3 * fastest, medians
    assert fastest > 3 * medians["control"], medians


# -- what is stored, and the password policy -----------------------------------------------


WEAK_PASSWORDS = {
    "too_short": "Sh0rt-pass!",  # 11 characters
    "too_long": "x1-" * 43,  # 129 characters
    "common": "password1234",
    "common_with_capitals": "Password1234",
    "few_distinct_characters": "abababababababab",
}


@pytest.mark.parametrize("weak", sorted(WEAK_PASSWORDS))
def test_weak_passwords_are_refused_wherever_a_password_is_set(
    tenant: Tenant, client: TestClient, weak: str
) -> None:
    password = WEAK_PASSWORDS[weak]
    email = unique_email("weak")
    r = client.post(
        "/v1/signup", json={"email": email, "password": password, "tenant_name": "weak"}
    )
    assert [e["field"] for e in assert_problem(r, 422, "validation_error")["errors"]] == [
        "password"
    ]
    r = client.post("/v1/auth/login", json={"email": email, "password": password})
    assert_unauthenticated(r)
    _, _, token = invite(tenant.owner, "viewer")
    r = client.post("/v1/auth/accept-invitation", json={"token": token, "password": password})
    assert_problem(r, 422, "validation_error")
    r = tenant.people["viewer"].post(
        "/v1/users/me/password", {"current_password": PASSWORD, "new_password": password}
    )
    assert [e["field"] for e in assert_problem(r, 422, "validation_error")["errors"]] == [
        "new_password"
    ]


def test_secrets_are_stored_only_as_hashes(tenant: Tenant, db: Db) -> None:
    owner = tenant.owner
    (stored,) = db.fetch("SELECT password_hash FROM users WHERE id = $1", owner.user_id)
    assert stored[0].startswith("$argon2id$")
    assert PASSWORD not in stored[0]
    sha = hashlib.sha256(owner.refresh_token.encode()).hexdigest()
    assert db.fetch("SELECT COUNT(*) FROM refresh_tokens WHERE token_sha256 = $1", sha) == [(1,)]
    key = tenant.keys["all"]
    secret = secret_of(key.token)
    (row,) = db.fetch("SELECT * FROM api_keys WHERE id = $1", key.key_id)
    assert secret not in json.dumps([str(v) for v in row])
    assert hashlib.sha256(secret.encode()).hexdigest() in row
    _, _, invitation = invite(owner, "viewer")
    for table in ("invitations", "refresh_tokens", "sessions", "users", "audit_events"):
        dump = json.dumps([[str(v) for v in r] for r in db.fetch(f"SELECT * FROM {table}")])
        for value in (invitation, owner.refresh_token, secret, PASSWORD, owner.token):
            assert value not in dump, table


def test_an_invitation_is_single_use(tenant: Tenant, client: TestClient) -> None:
    _, email, token = invite(tenant.owner, "viewer")
    first = client.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
    assert first.status_code == 200, first.text
    again = client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": OTHER_PASSWORD}
    )
    assert_problem(again, 404, "not_found")
    assert works(login(client, email, PASSWORD))


def test_the_invitation_of_a_disabled_member_cannot_be_accepted(
    tenant: Tenant, client: TestClient
) -> None:
    user_id, email, token = invite(tenant.owner, "admin")
    assert tenant.owner.delete(f"/v1/members/{user_id}").status_code == 204
    r = client.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
    assert_problem(r, 404, "not_found")
    assert_unauthenticated(
        client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    )


def test_an_invitation_expires(database_url: str) -> None:
    clock = FakeClock()
    with new_database(database_url) as url, serve(url, clock=clock) as c:
        owner = signup(c, "inviter")
        _, email, token = invite(owner, "viewer")
        clock.advance(7 * 86_400 + 1)
        r = c.post("/v1/auth/accept-invitation", json={"token": token, "password": PASSWORD})
        assert_problem(r, 404, "not_found")
        r = c.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert_unauthenticated(r)


# -- /graphql: the same credentials, read the same way -------------------------------------

GRAPHQL_ME = {"query": "{ accounts(first: 1) { nodes { id } } }"}


def test_graphql_takes_an_api_key_and_an_access_token_like_every_v1_route(
    tenant: Tenant, client: TestClient
) -> None:
    for caller in (tenant.owner, tenant.keys["all"], tenant.people["viewer"]):
        r = client.post("/graphql", json=GRAPHQL_ME, headers=caller.headers)
        assert r.status_code == 200, r.text
        assert "errors" not in r.json(), r.text


@pytest.mark.parametrize("name", ["signature_tampered", "alg_none", "expired_a_second_ago"])
def test_graphql_refuses_a_forged_or_expired_token_with_401(
    forge: Forge, client: TestClient, name: str
) -> None:
    token = FORGERIES[name](forge)
    r = client.post("/graphql", json=GRAPHQL_ME, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["errors"][0]["extensions"]["code"] == "unauthenticated"
    assert forge.token not in r.text


def test_graphql_reads_the_credential_only_from_the_authorization_header(
    tenant: Tenant, client: TestClient
) -> None:
    token, key = tenant.owner.token, tenant.keys["all"].token
    for where in (
        {"params": {"access_token": token}},
        {"headers": {"X-Api-Key": key}},
        {"headers": {"Cookie": f"access_token={token}; session={token}"}},
    ):
        r = client.post("/graphql", json=GRAPHQL_ME, **where)  # type: ignore[arg-type]
        assert r.status_code == 401, r.text


def test_graphql_refuses_a_revoked_key_on_the_very_next_request(tenant: Tenant) -> None:
    key = make_key(tenant.owner, "gql-revoked", ["accounts:read"])
    assert key.post("/graphql", GRAPHQL_ME).status_code == 200
    assert tenant.owner.delete(f"/v1/api-keys/{key.key_id}").status_code == 204
    assert key.post("/graphql", GRAPHQL_ME).status_code == 401


# -- the console's session -----------------------------------------------------------------


def test_a_console_session_outlives_its_access_token_and_not_its_logout(
    database_url: str,
) -> None:
    clock, ttl = FakeClock(), 600
    with (
        new_database(database_url) as url,
        serve(url, clock=clock, access_token_ttl_seconds=ttl) as c,
    ):
        person = signup(c, "console-expiry")
        browser = console_login(c, person.email, person.password)
        before = browser.cookies.get("tally_console")
        clock.advance(ttl + 5)  # the cookie's access token has expired: refreshed
        r = browser.get("/console/accounts")
        assert r.status_code == 200, r.text
        after = browser.cookies.get("tally_console")
        assert after and after != before
        # The old cookie's refresh token is spent: replaying it ends the session
        # (refresh-token reuse), for the thief and the person alike.
        thief = Browser(Jar(c), "")
        thief.cookies.set("tally_console", before or "", path="/console")
        assert thief.get("/console/accounts").status_code == 303
        assert browser.get("/console/accounts").status_code == 303


def test_a_forged_or_tampered_console_cookie_is_a_login_page(
    tenant: Tenant, client: TestClient
) -> None:
    browser = console_login(client, tenant.owner.email, tenant.owner.password)
    real = browser.cookies.get("tally_console") or ""
    access, refresh = real.split("|")
    for forged in (
        "",
        "x",
        "a|b",
        f"{access}x|{refresh}",
        f"{access}|{refresh}|more",
        f"{tenant.keys['all'].token}|{refresh}",  # an API key is not a console session
        "|" * 5000,
    ):
        thief = Browser(Jar(client), "")
        thief.cookies.set("tally_console", forged, path="/console")
        r = thief.get("/console/accounts")
        if forged == f"{access}x|{refresh}":
            # A broken access token is refreshed with the real refresh token: the
            # refresh token is the session's secret, and it is the real one.
            assert r.status_code == 200
            continue
        assert r.status_code == 303, forged[:40]
        assert r.headers["location"].startswith("/console/login")


# -- the event WebSocket (/v1/events/ws): credentials at the handshake or in a message ----


def _ws_refusal(client: TestClient, headers: dict[str, str]) -> int:
    with pytest.raises(WebSocketDenialResponse) as denied:
        client.websocket_connect("/v1/events/ws", headers=headers).__enter__()
    problem = denied.value.json()
    assert problem["status"] == denied.value.status_code
    return int(denied.value.status_code)


def test_the_event_websocket_refuses_a_bad_handshake_credential_with_401(
    tenant: Tenant, client: TestClient
) -> None:
    for header in ("Bearer tly_nope_nope", "Bearer ", "Basic dXNlcjpwYXNz", "tly_x_y"):
        assert _ws_refusal(client, {"Authorization": header}) == 401


def test_the_event_websocket_refuses_a_revoked_key_and_one_without_the_scope(
    tenant: Tenant, client: TestClient
) -> None:
    key = make_key(tenant.owner, "ws-revoked", ["events:read"])
    with client.websocket_connect("/v1/events/ws", headers=key.headers) as ws:
        ws.close()
    assert tenant.owner.delete(f"/v1/api-keys/{key.key_id}").status_code == 204
    assert _ws_refusal(client, key.headers) == 401
    no_scope = make_key(tenant.owner, "ws-no-scope", ["accounts:read"])
    assert _ws_refusal(client, no_scope.headers) == 403
    with client.websocket_connect("/v1/events/ws") as ws:
        ws.send_json({"type": "auth", "token": no_scope.token})
        assert ws.receive_json()["code"] == "forbidden"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4403


def test_the_event_websocket_auth_message_takes_only_a_credential(
    tenant: Tenant, client: TestClient
) -> None:
    for message in (
        {"type": "auth", "token": tenant.keys["accounts:read"].token.upper()},
        {"type": "auth", "token": ["a", "list"]},
        {"type": "auth", "token": "x" * 10_000},
        {"type": "AUTH", "token": tenant.keys["all"].token},
    ):
        with client.websocket_connect("/v1/events/ws") as ws:
            ws.send_json(message)
            assert ws.receive_json()["code"] == "unauthenticated"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 4401
