"""TLS, HTTP/2 and HTTP/3 as real clients see them (docs/protocols.md).

``tally serve`` runs as an operator runs it, on SQLite in the test's directory,
with a certificate from ``tally dev-cert``; curl (Debian's, with nghttp2) checks
what was negotiated (its ``-v`` lines and ``%{http_version}``), and an HTTP/3
client on aioquic (tests/h3_client.py) makes transfers over QUIC. Only 127.0.0.1
is contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import h2.exceptions
import httpx
import pytest

from tests.e2e.conftest import TALLY, Server, StartServer, cli_create_tenant, walk
from tests.h3_client import h3_connect

CURL_TIMEOUT_SECONDS = 20
# tally serve's grace period is 10 s; the QUIC connections close as soon as their
# requests are answered, so a stop takes far less.
STOP_WITHIN_SECONDS = 8.0
TEST_BUDGET_SECONDS = 60.0


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path

    def settings(self) -> dict[str, str]:
        return {"tls_cert": str(self.cert), "tls_key": str(self.key)}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a localhost certificate, made by ``tally dev-cert``."""
    directory = tmp_path_factory.mktemp("tls")
    done = subprocess.run(
        [str(TALLY), "dev-cert", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Tls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tally.db'}"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Curled:
    http_version: str
    status: int
    body: str
    verbose: str

    def header(self, name: str) -> str | None:
        for line in self.verbose.splitlines():
            if line.lower().startswith(f"< {name.lower()}:"):
                return line.split(":", 1)[1].strip()
        return None


def curl(*args: str, ca: Path | None = None) -> Curled:
    """One curl request: what it negotiated (-v) and what it got."""
    argv = ["curl", "-sS", "-v", "-o", "-", "-w", "\n%{http_version} %{http_code}"]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    done = subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=CURL_TIMEOUT_SECONDS, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    body, _, last = done.stdout.rpartition("\n")
    version, status = last.split()
    return Curled(version, int(status), body, done.stderr)


def _transfer_args(key: str, body: object) -> list[str]:
    return [
        "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
        "--data", json.dumps(body),
    ]  # fmt: skip


def _set_up_accounts(server: Server, key: str, tls: Tls) -> None:
    verify = ssl.create_default_context(cafile=str(tls.ca))
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, verify=verify, headers=headers) as client:
        for account in ("a", "b"):
            r = client.post("/v1/accounts", json={"id": account, "currency": "USD"})
            assert r.status_code == 201, r.text


def test_granian_negotiates_h2_or_http11_by_alpn_over_tls_13_and_never_below_12(
    start_server: StartServer, sqlite_url: str, tls: Tls
) -> None:
    server = start_server(
        sqlite_url, tls_ca=tls.ca, http_server="granian", http2="true", **tls.settings()
    )
    _, key = cli_create_tenant(sqlite_url, "granian tls")
    _set_up_accounts(server, key, tls)
    transfer = {"debit_account_id": "a", "credit_account_id": "b", "amount": 7}

    h2 = curl(
        "--http2", *_transfer_args(key, transfer), f"{server.base_url}/v1/transfers", ca=tls.ca
    )
    assert (h2.http_version, h2.status) == ("2", 201), h2.body
    assert "ALPN: server accepted h2" in h2.verbose
    assert "SSL connection using TLSv1.3" in h2.verbose
    # HSTS follows TLS: the scheme granian gives the app is https.
    assert h2.header("strict-transport-security") == "max-age=63072000; includeSubDomains"

    h1 = curl("--http1.1", f"{server.base_url}/healthz", ca=tls.ca)
    assert (h1.http_version, h1.status) == ("1.1", 200)
    assert "ALPN: server accepted http/1.1" in h1.verbose

    # A client that stops at TLS 1.2 is still served; one that stops at 1.1 is not.
    old = curl("--http2", "--tls-max", "1.2", f"{server.base_url}/healthz", ca=tls.ca)
    assert "SSL connection using TLSv1.2" in old.verbose and old.status == 200
    refused = subprocess.run(
        ["curl", "-sS", "--cacert", str(tls.ca), "--tlsv1.0", "--tls-max", "1.1",
         f"{server.base_url}/healthz"],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    # An alert from the server: it refused the hello, the client did not give up alone.
    assert refused.returncode != 0 and "alert" in refused.stderr, refused.stderr

    # Bad input over h2 is problem+json, as over HTTP/1.1.
    bad = curl("--http2", *_transfer_args(key, {"amount": "x"}),
               f"{server.base_url}/v1/transfers", ca=tls.ca)  # fmt: skip
    assert bad.status == 422 and bad.header("content-type") == "application/problem+json"
    assert json.loads(bad.body)["code"] == "validation_error"


def test_granian_serves_h2c_by_prior_knowledge_beside_http11_on_a_plain_port(
    start_server: StartServer, sqlite_url: str
) -> None:
    server = start_server(sqlite_url, http_server="granian", http2="true")
    h2c = curl("--http2-prior-knowledge", f"{server.base_url}/healthz")
    assert (h2c.http_version, h2c.status) == ("2", 200)
    assert h2c.header("strict-transport-security") is None  # not over plain TCP
    h1 = curl("--http1.1", f"{server.base_url}/healthz")
    assert (h1.http_version, h1.status) == ("1.1", 200)


def test_uvicorn_serves_https_with_http11_by_alpn_and_tls_12_at_least(
    start_server: StartServer, sqlite_url: str, tls: Tls
) -> None:
    server = start_server(sqlite_url, tls_ca=tls.ca, http_server="uvicorn", **tls.settings())
    asked_h2 = curl("--http2", f"{server.base_url}/healthz", ca=tls.ca)
    assert (asked_h2.http_version, asked_h2.status) == ("1.1", 200)
    assert "ALPN: server accepted http/1.1" in asked_h2.verbose
    assert "SSL connection using TLSv1.3" in asked_h2.verbose
    assert asked_h2.header("strict-transport-security") is not None
    refused = subprocess.run(
        ["curl", "-sS", "--cacert", str(tls.ca), "--tlsv1.0", "--tls-max", "1.1",
         f"{server.base_url}/healthz"],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    # The server refused the hello: Python's ssl under asyncio closes the connection
    # rather than sending an alert: the client sees it end after its hello.
    assert refused.returncode != 0 and "SSL_ERROR_SYSCALL" in refused.stderr, refused.stderr


def test_serve_refuses_what_its_server_cannot_speak(sqlite_url: str, tls: Tls) -> None:
    # The real command, exit status and words; tests/unit/cli/test_transport.py
    # has every combination.
    cases = [
        (["--server", "uvicorn", "--http2"], "uvicorn speaks HTTP/1.1 only"),
        (["--server", "hypercorn", "--quic-port", "9"], "QUIC has no plain-text mode"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_DATABASE_URL"] = sqlite_url
    for args, said in cases:
        done = subprocess.run(
            [str(TALLY), "serve", "--no-migrate", *args],
            env=env, capture_output=True, text=True, timeout=CURL_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr)


# -- HTTP/3 over QUIC (hypercorn) -------------------------------------------------------


@dataclass(frozen=True)
class H3Server:
    server: Server
    quic_port: int
    api_key: str


@pytest.fixture
def h3_server(start_server: StartServer, sqlite_url: str, tls: Tls) -> H3Server:
    quic_port = free_udp_port()
    server = start_server(
        sqlite_url,
        tls_ca=tls.ca,
        http_server="hypercorn",
        http2="true",
        quic_port=str(quic_port),
        **tls.settings(),
    )
    _, key = cli_create_tenant(sqlite_url, "h3")
    _set_up_accounts(server, key, tls)
    return H3Server(server, quic_port, key)


def test_an_http3_client_moves_money_over_quic_and_alt_svc_points_to_it(
    h3_server: H3Server, tls: Tls
) -> None:
    base_url = h3_server.server.base_url
    headers = {"authorization": f"Bearer {h3_server.api_key}"}
    transfer = {"debit_account_id": "a", "credit_account_id": "b", "amount": 3}

    async def run() -> None:
        async with h3_connect("127.0.0.1", h3_server.quic_port, ca_path=tls.ca) as client:
            # Twenty transfers at once: twenty streams of one QUIC connection.
            answers = await asyncio.gather(
                *(
                    client.json_request("POST", "/v1/transfers", transfer, headers)
                    for _ in range(20)
                )
            )
            assert [a.status for a in answers] == [201] * 20, answers[0].body
            assert answers[0].headers["server"] == "hypercorn-h3"
            assert answers[0].headers["strict-transport-security"]
            account = await client.request("GET", "/v1/accounts/b", headers=headers)
            assert account.status == 200 and account.json()["credits_posted"] == 60
            bad = await client.request(
                "POST", "/v1/transfers", headers={**headers, "content-type": "application/json"},
                body=b"{not json",
            )  # fmt: skip
            assert bad.status == 400 and bad.headers["content-type"] == "application/problem+json"
            assert bad.json()["code"] == "malformed_request"

    asyncio.run(asyncio.wait_for(run(), TEST_BUDGET_SECONDS))
    advertised = f'h3=":{h3_server.quic_port}"; ma=86400'
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        answer = curl(flag, f"{base_url}/healthz", ca=tls.ca)
        assert answer.http_version == version and answer.header("alt-svc") == advertised


def test_a_0rtt_post_is_refused_with_425_and_runs_once_sent_after_the_handshake(
    h3_server: H3Server, tls: Tls
) -> None:
    headers = {"authorization": f"Bearer {h3_server.api_key}"}
    transfer = {"id": "early-1", "debit_account_id": "a", "credit_account_id": "b", "amount": 5}
    port = h3_server.quic_port

    async def run() -> None:
        tickets: list[object] = []
        async with h3_connect("127.0.0.1", port, ca_path=tls.ca, tickets=tickets) as first:
            assert (await first.request("GET", "/healthz")).status == 200
        assert tickets, "the server issued no session ticket"
        ticket = tickets[-1]
        async with h3_connect(
            "127.0.0.1", port, ca_path=tls.ca, session_ticket=ticket, wait_connected=False
        ) as client:  # fmt: skip
            # Both go out before the handshake completes: 0-RTT early data.
            early_post = client.json_request("POST", "/v1/transfers", transfer, headers)
            early_get = client.request("GET", "/v1/accounts/a", headers=headers)
            post, get = await asyncio.gather(early_post, early_get)
            await client.handshake_completed()
            assert client.early_data_accepted, "the server did not take the early data"
            assert post.status == 425, post.body
            assert post.headers["content-type"] == "application/problem+json"
            assert post.json()["code"] == "too_early" and post.json()["status"] == 425
            assert get.status == 200  # a safe method may run from early data
            assert get.json()["debits_posted"] == 0  # the early POST moved nothing
            again = await client.json_request("POST", "/v1/transfers", transfer, headers)
            assert again.status == 201, again.body
        # The same ticket again (a replay of that first flight) gets no early data.
        async with h3_connect(
            "127.0.0.1", port, ca_path=tls.ca, session_ticket=ticket, wait_connected=False
        ) as replay:  # fmt: skip
            answer = await replay.json_request("POST", "/v1/transfers", transfer, headers)
            assert not replay.early_data_accepted
            assert answer.status == 200  # the transfer exists: an idempotent replay
        async with h3_connect("127.0.0.1", port, ca_path=tls.ca) as client:
            account = await client.request("GET", "/v1/accounts/a", headers=headers)
            assert account.json()["debits_posted"] == 5  # once

    asyncio.run(asyncio.wait_for(run(), TEST_BUDGET_SECONDS))


def test_hypercorn_answers_requests_in_flight_and_ends_streams_when_stopped(
    start_server: StartServer, h3_server: H3Server, sqlite_url: str, tls: Tls
) -> None:
    """SIGTERM while HTTP/3 clients move money and an HTTP/2 client holds an event
    stream: the stream ends cleanly, every request in flight is answered, the
    server exits 0 well within its grace period, and every transfer answered 201
    is in the ledger a new server reads."""
    server = h3_server.server
    headers = {"authorization": f"Bearer {h3_server.api_key}"}
    verify = ssl.create_default_context(cafile=str(tls.ca))

    async def run() -> tuple[set[str], float]:
        created: set[str] = set()
        stopping = asyncio.Event()
        async with (
            httpx.AsyncClient(base_url=server.base_url, verify=verify, http2=True) as http2,
            http2.stream("GET", "/v1/events/stream", headers=headers) as stream,
            h3_connect("127.0.0.1", h3_server.quic_port, ca_path=tls.ca) as h3,
        ):
            assert stream.status_code == 200 and stream.http_version == "HTTP/2"

            async def move(n: int) -> None:
                for i in range(10_000):
                    transfer = {
                        "id": f"t-{n}-{i}", "debit_account_id": "a", "credit_account_id": "b",
                        "amount": 1,
                    }  # fmt: skip
                    try:
                        answer = await h3.json_request("POST", "/v1/transfers", transfer, headers)
                    except (ConnectionError, TimeoutError):
                        assert stopping.is_set(), "a request failed before the SIGTERM"
                        return
                    assert answer.status == 201, answer.body
                    created.add(transfer["id"])

            async def read_stream() -> None:
                async for _ in stream.aiter_bytes():
                    pass  # ends when the server ends the stream; an error fails the test

            movers = [asyncio.create_task(move(n)) for n in range(8)]
            reader = asyncio.create_task(read_stream())
            await asyncio.sleep(1.0)
            stopping.set()
            os.killpg(server.process.pid, signal.SIGTERM)
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*movers, reader), STOP_WITHIN_SECONDS)
        while server.process.poll() is None:
            assert time.monotonic() - started < STOP_WITHIN_SECONDS, "hypercorn did not exit"
            await asyncio.sleep(0.05)
        return created, time.monotonic() - started

    created, took = asyncio.run(asyncio.wait_for(run(), TEST_BUDGET_SECONDS))
    assert server.process.returncode == 0, server.log_tail()
    assert "Traceback" not in server.log_text(), server.log_tail()
    assert created, "no transfer was answered before the SIGTERM"
    assert took < STOP_WITHIN_SECONDS
    reader = start_server(sqlite_url, migrate=False)

    async def check() -> None:
        async with httpx.AsyncClient(base_url=reader.base_url, headers=headers) as client:
            listed = {t["id"] for t in await walk(client, "/v1/transfers")}
        assert created <= listed, f"{len(created - listed)} transfers answered 201 are missing"

    asyncio.run(asyncio.wait_for(check(), TEST_BUDGET_SECONDS))


def test_granian_over_h2_ends_streams_and_answers_in_flight_when_stopped(
    start_server: StartServer, sqlite_url: str, tls: Tls
) -> None:
    """The same stop under granian's HTTP/2 over TLS: transfers in flight on
    multiplexed streams are answered, the event stream on the same connection
    ends cleanly, and the server exits 0 within its grace period."""
    server = start_server(
        sqlite_url, tls_ca=tls.ca, http_server="granian", http2="true", **tls.settings()
    )
    _, key = cli_create_tenant(sqlite_url, "granian stop")
    _set_up_accounts(server, key, tls)
    headers = {"authorization": f"Bearer {key}"}
    verify = ssl.create_default_context(cafile=str(tls.ca))

    async def run() -> tuple[set[str], float]:
        created: set[str] = set()
        stopping = asyncio.Event()
        async with (
            httpx.AsyncClient(
                base_url=server.base_url, verify=verify, http2=True, headers=headers
            ) as client,
            client.stream("GET", "/v1/events/stream") as stream,
        ):
            assert stream.status_code == 200 and stream.http_version == "HTTP/2"

            async def move(n: int) -> None:
                for i in range(10_000):
                    body = {"id": f"g-{n}-{i}", "debit_account_id": "a", "credit_account_id": "b"}
                    try:
                        answer = await client.post("/v1/transfers", json={**body, "amount": 1})
                    except (httpx.TransportError, h2.exceptions.ProtocolError):
                        # The client's h2 state machine is closed by the server's
                        # GOAWAY and then refuses the PING that may follow it
                        # (h2 raises that one unwrapped): the connection's end.
                        assert stopping.is_set(), "a request failed before the SIGTERM"
                        return
                    if answer.status_code != 201:
                        assert stopping.is_set() and answer.status_code >= 500, answer.text
                        return
                    created.add(body["id"])

            async def read_stream() -> None:
                try:
                    async for _ in stream.aiter_bytes():
                        pass
                except h2.exceptions.ProtocolError:
                    assert stopping.is_set(), "the stream failed before the SIGTERM"

            movers = [asyncio.create_task(move(n)) for n in range(8)]
            reader = asyncio.create_task(read_stream())
            await asyncio.sleep(1.0)
            stopping.set()
            os.killpg(server.process.pid, signal.SIGTERM)
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*movers, reader), STOP_WITHIN_SECONDS)
        while server.process.poll() is None:
            assert time.monotonic() - started < STOP_WITHIN_SECONDS, "granian did not exit"
            await asyncio.sleep(0.05)
        return created, time.monotonic() - started

    created, took = asyncio.run(asyncio.wait_for(run(), TEST_BUDGET_SECONDS))
    assert server.process.returncode == 0, server.log_tail()
    assert "Traceback" not in server.log_text(), server.log_tail()
    assert created, "no transfer was answered before the SIGTERM"
    reader = start_server(sqlite_url, migrate=False)

    async def check() -> None:
        async with httpx.AsyncClient(base_url=reader.base_url, headers=headers) as client:
            listed = {t["id"] for t in await walk(client, "/v1/transfers")}
        assert created <= listed, f"{len(created - listed)} transfers answered 201 are missing"

    asyncio.run(asyncio.wait_for(check(), TEST_BUDGET_SECONDS))
    assert took < STOP_WITHIN_SECONDS
