"""The ``tally`` command for people, run as a real subprocess against a real
``tally serve``, on both backends: login and profiles, accounts, transfers,
events, and an import that is killed (the command, then the server) and run
again without a row applied twice."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tally.client import Client
from tests.e2e.conftest import TALLY, Server, StartServer, cli_create_tenant

RUN_SECONDS = 120
WAIT_SECONDS = 60


@dataclass
class Setup:
    server: Server
    database_url: str
    api_key: str
    env: dict[str, str]

    def tally(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(TALLY), *args], env=self.env, capture_output=True, text=True,
            timeout=RUN_SECONDS, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def json_lines(self, *args: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.tally(*args, "--json").stdout.splitlines()]

    def client(self) -> Client:
        return Client(self.server.base_url, self.api_key)


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, start_server: StartServer) -> Setup:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    server = start_server(url)
    _, api_key = cli_create_tenant(url, "cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["TALLY_CONFIG"] = str(tmp_path / "config" / "tally.json")
    return Setup(server, url, api_key, env)


def test_login_keeps_the_key_where_only_its_owner_can_read_it(setup: Setup) -> None:
    refused = setup.tally("login", "--url", setup.server.base_url, "--api-key", "tk_x", check=False)
    assert refused.returncode == 1 and "unauthenticated" in refused.stderr
    config = Path(setup.env["TALLY_CONFIG"])
    assert not config.exists()
    setup.tally("login", "--url", setup.server.base_url, "--api-key", setup.api_key)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert setup.json_lines("accounts", "create", "USD", "--id", "cash")[0]["id"] == "cash"
    config.chmod(0o644)
    loose = setup.tally("accounts", "list", check=False)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    config.chmod(0o600)
    setup.tally("logout")
    assert setup.tally("accounts", "show", "cash", check=False).returncode == 1  # no key now


def logged_in(setup: Setup) -> Setup:
    setup.tally("login", "--url", setup.server.base_url, "--api-key", setup.api_key)
    return setup


def test_accounts_transfers_and_events_from_the_command_line(setup: Setup) -> None:
    logged_in(setup)
    setup.tally("accounts", "create", "USD", "--id", "cash", "--normal-balance", "debit")
    setup.tally("accounts", "create", "USD", "--id", "shop", "-m", "team=sales")
    made = setup.json_lines("transfers", "create", "cash", "shop", "250", "-m", "order=7")[0]
    assert (made["amount"], made["metadata"]) == (250, {"order": "7"})
    hold = setup.json_lines("transfers", "create", "cash", "shop", "90", "--pending")[0]
    posted = setup.json_lines("transfers", "post", str(hold["id"]), "--amount", "40")[0]
    assert posted["pending_id"] == hold["id"]
    shown = setup.json_lines("accounts", "show", "shop")[0]
    assert shown["credits_posted"] == 290
    assert [t["amount"] for t in setup.json_lines("transfers", "list", "--account", "shop")] == [
        250,
        90,
        40,
    ]
    types = [e["type"] for e in setup.json_lines("events", "tail")]
    assert types.count("transfer.created") == 3
    refused = setup.tally("transfers", "void", str(hold["id"]), check=False)
    assert refused.returncode == 1
    assert "pending_transfer_already_posted" in refused.stderr and "request req_" in refused.stderr
    human = setup.tally("accounts", "list").stdout
    assert "cash  USD" in human and "shop  USD" in human


def test_export_writes_every_object_as_json_lines_or_csv(setup: Setup, tmp_path: Path) -> None:
    logged_in(setup)
    with setup.client() as c:
        for name in ("a", "b"):
            c.accounts.create("EUR", id=name)
        c.transfers.batch(
            [
                {"debit_account_id": "a", "credit_account_id": "b", "amount": 1 + i}
                for i in range(30)
            ]
        )
    lines = setup.tally("export", "transfers").stdout.splitlines()
    assert [json.loads(line)["amount"] for line in lines] == list(range(1, 31))
    out = tmp_path / "events.csv"
    setup.tally("export", "events", "--format", "csv", "-o", str(out))
    assert out.read_text().splitlines()[0].startswith("sequence,type,created_at,data")
    assert len(out.read_text().splitlines()) == 33  # header, 2 accounts, 30 transfers


def write_csv(path: Path, rows: int, *, bad_lines: tuple[int, ...] = ()) -> int:
    """debit,credit,amount rows: the amounts 1..rows; returns their sum."""
    text = ["debit_account_id,credit_account_id,amount,metadata.batch"]
    for i in range(1, rows + 1):
        amount = "12.5" if i + 1 in bad_lines else str(i)  # line = i + 1 (the header is 1)
        text.append(f"src,dst,{amount},b{i // 100}")
    path.write_text("\n".join(text) + "\n")
    return rows * (rows + 1) // 2


def ledger_holds_each_row_once(setup: Setup, rows: int, total: int) -> None:
    with setup.client() as c:
        stored = list(c.transfers.iterate(account_id="dst", limit=1000))
        assert len(stored) == rows
        assert len({t.id for t in stored}) == rows
        assert c.accounts.get("dst").credits_posted == total


def open_import_accounts(setup: Setup) -> None:
    with setup.client() as c:
        c.accounts.create("USD", id="src", normal_balance="debit")
        c.accounts.create("USD", id="dst")


def test_a_malformed_row_stops_the_import_before_anything_is_sent(
    setup: Setup, tmp_path: Path
) -> None:
    logged_in(setup)
    open_import_accounts(setup)
    csv_path = tmp_path / "bad.csv"
    write_csv(csv_path, 50, bad_lines=(7, 31))
    done = setup.tally("import", str(csv_path), check=False)
    assert done.returncode == 1
    assert (
        "line 7:" in done.stdout
        and "line 31:" in done.stdout
        and "nothing was imported" in done.stderr
    )
    ledger_holds_each_row_once(setup, 0, 0)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def checkpoint_line(csv_path: Path) -> int:
    try:
        return int(
            json.loads(csv_path.with_name(csv_path.name + ".tally-import.json").read_text())["line"]
        )
    except (OSError, ValueError, KeyError):
        return 0


def start_import(setup: Setup, csv_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(TALLY), "import", str(csv_path), "--batch-size", "100", "--json", *extra],
        env=setup.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_an_import_killed_halfway_and_run_again_applies_each_row_once(
    setup: Setup, tmp_path: Path
) -> None:
    logged_in(setup)
    open_import_accounts(setup)
    csv_path = tmp_path / "transfers.csv"
    total = write_csv(csv_path, 3000)
    first = start_import(setup, csv_path)
    wait_for(lambda: checkpoint_line(csv_path) > 500, "the first batches")
    first.send_signal(signal.SIGKILL)
    first.wait(RUN_SECONDS)
    done = setup.tally("import", str(csv_path), "--json")
    summary = json.loads(done.stdout.splitlines()[-1])["summary"]
    assert summary["rows"] == 3000 and summary["refused"] == 0
    assert summary["skipped"] >= 500  # resumed from the checkpoint
    ledger_holds_each_row_once(setup, 3000, total)
    again = json.loads(
        setup.tally("import", str(csv_path), "--restart", "--json").stdout.splitlines()[-1]
    )
    assert again["summary"]["existed"] == 3000  # the ids alone hold, without the checkpoint
    ledger_holds_each_row_once(setup, 3000, total)


def test_an_import_outlives_a_server_killed_and_restarted_under_it(
    setup: Setup, tmp_path: Path, start_server: StartServer
) -> None:
    logged_in(setup)
    open_import_accounts(setup)
    csv_path = tmp_path / "transfers.csv"
    total = write_csv(csv_path, 3000)
    importing = start_import(setup, csv_path)
    wait_for(lambda: checkpoint_line(csv_path) > 300, "the first batches")
    os.killpg(setup.server.process.pid, signal.SIGKILL)  # the server and its workers, mid-import
    setup.server.process.wait(RUN_SECONDS)
    port = urlsplit(setup.server.base_url).port
    setup.server = start_server(setup.database_url, port=port)
    out, err = importing.communicate(timeout=RUN_SECONDS)
    if importing.returncode != 0:  # its retries ran out before the server was back
        assert "no answer" in err, err
        out = setup.tally("import", str(csv_path), "--json").stdout
    assert json.loads(out.splitlines()[-1])["summary"]["refused"] == 0
    ledger_holds_each_row_once(setup, 3000, total)


def test_events_tail_follow_prints_new_events_as_they_commit(setup: Setup) -> None:
    logged_in(setup)
    open_import_accounts(setup)
    after = setup.json_lines("events", "tail")[-1]["sequence"]
    tail = subprocess.Popen(
        [str(TALLY), "events", "tail", "--follow", "--json", "--after", str(after)],
        env=setup.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with setup.client() as c:
            made = c.transfers.create("src", "dst", 77)
        assert tail.stdout is not None
        line = json.loads(tail.stdout.readline())  # blocks until the event arrives
        assert (line["type"], line["data"]["id"]) == ("transfer.created", made.id)
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(RUN_SECONDS) == 0
