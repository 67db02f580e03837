"""docs/client.md's Python example, run as a reader would against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import StartServer, cli_create_tenant

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_the_python_example_runs_and_prints_what_it_says(
    tmp_path: Path, start_server: StartServer
) -> None:
    url = f"sqlite:///{tmp_path / 'docs.db'}"
    server = start_server(url)
    _, api_key = cli_create_tenant(url, "docs")
    example = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert example is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env |= {"TALLY_URL": server.base_url, "TALLY_API_KEY": api_key}
    done = subprocess.run(
        [sys.executable, "-c", example.group(1)], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: exceeds_credits req_")
    # The hold shows its state now: posted (by the capture that follows it).
    assert [line.split()[1:] for line in lines[1:4]] == [
        ["5000", "posted"], ["1200", "posted"], ["1000", "posted"],
    ]  # fmt: skip
    assert lines[4] == "BalanceOut(posted=4000, pending=0, available=4000)"
