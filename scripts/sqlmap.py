"""sqlmap against a local ``tally serve``, on SQLite and on PostgreSQL (``make sqlmap``).

For each backend: a fresh database, ``tally tenants create --json`` for an API key,
``tally serve`` on 127.0.0.1 and a free port, a few accounts and transfers to aim
at, then sqlmap on every parameter of representative routes: list filters and
cursors, path ids, JSON body fields, PATCH metadata. Level 5, risk 3, every
technique, the backend's DBMS named. Only 127.0.0.1 is ever a target.

Exits 1 if sqlmap reports an injectable parameter, if the server answered any
request with a 5xx, or if it logged a traceback. Prints the figures that
docs/reliability.md records: the sqlmap version, the command of each target, the
parameters tested, and the server's own count of the requests it answered.

Usage: .venv/bin/python scripts/sqlmap.py [sqlite|postgresql ...]
(``TALLY_TEST_POSTGRES_URL`` names the PostgreSQL server, as for the tests; a
database ``tally_sqlmap_<random>`` is made on it and dropped afterwards.)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "TALLY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
LEVEL, RISK = "5", "3"
SQLMAP_TIMEOUT_SECONDS = 1_800
READY_TIMEOUT_SECONDS = 30.0
DBMS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# sqlmap's verdict that a parameter is injectable. Not "appears to be ... injectable":
# that is a candidate, which sqlmap then checks for a false positive (a PATCH whose
# value the response echoes back is one).
FOUND = re.compile(r"is vulnerable\.|identified the following injection point")


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    path: str  # a "*" marks a path segment to inject into
    body: dict[str, object] | None = None
    headers_too: bool = False  # also inject User-Agent, Referer, Host (once is enough)


def targets(cursors: dict[str, str]) -> list[Target]:
    return [
        Target(
            "list accounts: filters, metadata, cursor",
            "GET",
            f"/v1/accounts?currency=USD&status=open&metadata[tier]=gold&limit=10"
            f"&cursor={cursors['accounts']}",
            headers_too=True,
        ),
        Target(
            "list transfers: filters, times, order, cursor",
            "GET",
            "/v1/transfers?account_id=alice&status=posted&created_after=2000-01-01T00:00:00Z"
            f"&created_before=2999-01-01T00:00:00Z&order=asc&limit=10&cursor={cursors['transfers']}",
        ),
        Target(
            "list events: after, cursor", "GET", f"/v1/events?after=0&cursor={cursors['events']}"
        ),
        Target("account id in the path", "GET", "/v1/accounts/alice*"),
        Target(
            "balances: at, limit",
            "GET",
            "/v1/accounts/alice/balances?at=2999-01-01T00:00:00Z&limit=10",
        ),
        Target("balances: account id in the path", "GET", "/v1/accounts/alice*/balances"),
        Target("transfer id in the path", "GET", "/v1/transfers/t-1*"),
        Target(
            "create an account: JSON body",
            "POST",
            "/v1/accounts",
            {
                "id": "carol",
                "currency": "USD",
                "normal_balance": "credit",
                "metadata": {"tier": "gold"},
            },
        ),
        Target(
            "create a transfer: JSON body",
            "POST",
            "/v1/transfers",
            {
                "debit_account_id": "alice",
                "credit_account_id": "bob",
                "amount": 1,
                "currency": "USD",
                "metadata": {"note": "x"},
            },
        ),
        Target(
            "batch: JSON body",
            "POST",
            "/v1/transfers/batch",
            {
                "transfers": [
                    {"debit_account_id": "alice", "credit_account_id": "bob", "amount": 1}
                ],
                "atomic": True,
            },
        ),
        Target("post a pending transfer: id in the path", "POST", "/v1/transfers/hold-1*/post", {}),
        Target(
            "change an account: JSON body",
            "PATCH",
            "/v1/accounts/alice",
            {"metadata": {"tier": "platinum"}},
        ),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tally(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "tally"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"tally {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def seed(client: httpx.Client) -> dict[str, str]:
    """Accounts, transfers and a pending one to aim at; a real cursor for each list."""
    client.post("/v1/accounts", json={"id": "bank", "currency": "USD", "normal_balance": "debit"})
    for name in ("alice", "bob"):
        client.post(
            "/v1/accounts", json={"id": name, "currency": "USD", "metadata": {"tier": "gold"}}
        )
    for i in range(3):
        client.post(
            "/v1/transfers",
            json={
                "id": f"t-{i}",
                "debit_account_id": "bank",
                "credit_account_id": "alice",
                "amount": 1000,
            },
        )
    made = client.post(
        "/v1/transfers",
        json={
            "id": "hold-1",
            "debit_account_id": "alice",
            "credit_account_id": "bob",
            "amount": 5,
            "pending": True,
        },
    )
    assert made.status_code == 201, made.text
    cursors = {}
    for name, path in (
        ("accounts", "/v1/accounts"),
        ("transfers", "/v1/transfers"),
        ("events", "/v1/events"),
    ):
        page = client.get(path, params={"limit": 1}).json()
        cursors[name] = page["next_cursor"]
    return cursors


def sqlmap_command(
    base_url: str, api_key: str, backend: str, target: Target, out: Path
) -> list[str]:
    command = [
        str(BIN / "sqlmap"),
        "-u",
        base_url + target.path,
        "--method",
        target.method,
        "-H",
        f"Authorization: Bearer {api_key}",
        "--batch",
        "--flush-session",
        f"--level={LEVEL}",
        f"--risk={RISK}",
        "--technique=BEUSTQ",
        f"--dbms={DBMS[backend]}",
        "--time-sec=2",
        "--output-dir",
        str(out),
    ]
    if target.body is not None:
        command += ["--data", json.dumps(target.body), "-H", "Content-Type: application/json"]
    if not target.headers_too:
        command += ["--skip=user-agent,referer,host"]
    return command


def served_statuses(client: httpx.Client) -> Counter[str]:
    """The server's own count of the /v1 requests it answered, by status."""
    counts: Counter[str] = Counter()
    pattern = re.compile(r'^tally_http_requests_total\{.*status="(\d+)"\} ([0-9.e+]+)$')
    for line in client.get("/metrics").text.splitlines():
        found = pattern.match(line)
        if found:
            counts[found.group(1)] += int(float(found.group(2)))
    return counts


def run_backend(backend: str, work: Path) -> list[str]:
    problems: list[str] = []
    database = None
    if backend == "sqlite":
        url = f"sqlite:///{work / 'sqlmap.db'}"
    else:
        database = f"tally_sqlmap_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = PG_ADMIN_URL.rpartition("/")[0] + f"/{database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_DATABASE_URL"] = url
    env["TALLY_LOG_LEVEL"] = "warning"
    tally(env, "migrate")
    api_key = json.loads(tally(env, "tenants", "create", "sqlmap", "--json"))["api_key"]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = work / f"serve-{backend}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                str(BIN / "tally"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-migrate",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
            deadline = time.monotonic() + READY_TIMEOUT_SECONDS
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"tally serve did not come up:\n{log_path.read_text()}")
                time.sleep(0.1)
            cursors = seed(client)
            before = served_statuses(client)
            started = time.monotonic()
            for target in targets(cursors):
                problems += run_target(base_url, api_key, backend, target, work)
            after = served_statuses(client)
        answered = after - before
        print(
            f"\n== {backend}: {sum(answered.values())} requests answered in "
            f"{time.monotonic() - started:.0f} s, by status {dict(sorted(answered.items()))}"
        )
        problems += [
            f"{backend}: {n} answers with status {s}"
            for s, n in answered.items()
            if s.startswith("5")
        ]
        if "Traceback" in log_path.read_text():
            problems.append(f"{backend}: the server logged a traceback: see {log_path}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        if database is not None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return problems


def run_target(base_url: str, api_key: str, backend: str, target: Target, work: Path) -> list[str]:
    out = work / f"sqlmap-{backend}"
    command = sqlmap_command(base_url, api_key, backend, target, out)
    shown = shlex.join(command).replace(api_key, "$KEY")
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=SQLMAP_TIMEOUT_SECONDS, check=False
    )
    output = done.stdout + done.stderr
    (work / f"sqlmap-{backend}-{len(list(work.glob('sqlmap-*.txt')))}.txt").write_text(output)
    tested = sorted(set(re.findall(r"parameter '([^']+)' does not seem to be injectable", output)))
    print(f"\n-- {backend}: {target.name} ({time.monotonic() - started:.0f} s)\n   {shown}")
    print(f"   not injectable: {', '.join(tested) or '(none reported)'}")
    for line in output.splitlines():
        if "HTTP error codes detected" in line or re.match(r"^\d{3} \(.*\) - \d+ times", line):
            print(f"   {line.strip()}")
    if FOUND.search(output) or done.returncode not in (0,):
        return [f"{backend}: {target.name}: sqlmap exit {done.returncode}:\n{output[-3000:]}"]
    if not tested:
        return [f"{backend}: {target.name}: sqlmap reported no parameter tested:\n{output[-3000:]}"]
    return []


def main(argv: list[str]) -> int:
    backends = argv or list(DBMS)
    if not set(backends) <= set(DBMS):
        print(__doc__)
        return 2
    version = subprocess.run(
        [str(BIN / "sqlmap"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"sqlmap {version}; level {LEVEL}, risk {RISK}; backends {backends}")
    problems = []
    with tempfile.TemporaryDirectory(prefix="tally-sqlmap-") as tmp:
        for backend in backends:
            problems += run_backend(backend, Path(tmp))
    if problems:
        print("\nFINDINGS:\n" + "\n\n".join(problems))
        return 1
    print("\nsqlmap found no injectable parameter; no 5xx; no traceback.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
