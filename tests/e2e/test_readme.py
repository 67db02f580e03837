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
        assert len(commands) == 6
        outputs = []
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command.replace("localhost:8000", f"127.0.0.1:{port}")],
                env={**env, "KEY": key},
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            outputs.append(json.loads(done.stdout))
        alice = outputs[3]
        assert alice["id"] == "alice"
        assert alice["balance"] == {"posted": 1000, "pending": 0, "available": 1000}
        signed_up, logged_in = outputs[4], outputs[5]
        assert signed_up["tenant_id"].startswith("ten_")
        assert logged_in["token_type"] == "Bearer"
        me = httpx.get(
            f"{server.base_url}/v1/me",
            headers={"Authorization": f"Bearer {logged_in['access_token']}"},
            timeout=10,
        )
        assert me.json()["id"] == signed_up["user_id"]
        assert me.json()["role"] == "owner"
    finally:
        stop_server(server)


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
