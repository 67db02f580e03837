"""The README's quick start, run as a reader would: `make run`, then its curl lines.

If this passes, the first command of the README starts a working server that
prints a working API key, and every curl example in the README does what it says.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Server, free_port, stop_server, tally_env

REPO = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"API key for \S+: (tly_\S+)")
START_TIMEOUT_SECONDS = 60.0


def readme_curl_commands() -> list[str]:
    """The curl commands of the README's quick start, joined across line breaks."""
    text = (REPO / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", quick_start, re.DOTALL)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.startswith("curl")]
    return commands


def test_make_run_serves_and_the_readme_examples_work(tmp_path: Path) -> None:
    port = free_port()
    env = tally_env(f"sqlite:///{tmp_path / 'readme.db'}", port=str(port))
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        key = wait_for_key_and_server(server)
        commands = readme_curl_commands()
        assert len(commands) == 10
        outputs = []
        # What the README tells the reader to export from an earlier answer.
        shell_env = {**env, "KEY": key}
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command.replace("localhost:8000", f"127.0.0.1:{port}")],
                env=shell_env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            output = json.loads(done.stdout)
            outputs.append(output)
            if "invitation_token" in output:
                shell_env["INVITATION"] = output["invitation_token"]
            if "access_token" in output:
                shell_env["TOKEN"] = output["access_token"]
        alice = outputs[3]
        assert alice["id"] == "alice"
        assert alice["balance"] == {"posted": 1000, "pending": 0, "available": 1000}
        assert_sign_up_made_a_tenant_of_its_own(server, outputs[4], outputs[5])
        invited, accepted, logged_in, seen = outputs[6:10]
        assert invited["member"]["status"] == "invited"
        assert accepted["status"] == "active" and accepted["role"] == "viewer"
        assert logged_in["token_type"] == "Bearer"
        # The invited user is in the key's tenant: they see alice as she is.
        assert seen == alice
    finally:
        stop_server(server)


def assert_sign_up_made_a_tenant_of_its_own(
    server: Server, signed_up: dict[str, str], logged_in: dict[str, str]
) -> None:
    """As the README says: the new user owns a new, empty tenant."""
    assert signed_up["tenant_id"].startswith("ten_")
    assert logged_in["token_type"] == "Bearer"
    auth = {"Authorization": f"Bearer {logged_in['access_token']}"}
    me = httpx.get(f"{server.base_url}/v1/me", headers=auth, timeout=10).json()
    assert (me["id"], me["role"]) == (signed_up["user_id"], "owner")
    assert me["tenant_id"] == signed_up["tenant_id"]
    accounts = httpx.get(f"{server.base_url}/v1/accounts", headers=auth, timeout=10).json()
    assert accounts["data"] == []


def wait_for_key_and_server(server: Server) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    key = None
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log_tail()
        found = KEY_LINE.search(server.log_text())
        key = found.group(1) if found else None
        if key is not None:
            try:
                if httpx.get(server.base_url + "/readyz", timeout=1).status_code == 200:
                    return key
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"make run did not serve in time:\n{server.log_tail()}")
