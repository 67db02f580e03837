"""docs/events.md's consumer examples, run as they are printed against a real
server: each must print the events that exist and one committed while it runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StartServer, cli_create_tenant

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
EXAMPLE = re.compile(r"```python\n# examples: ([a-z -]+)\n(.*?)```", re.DOTALL)
RUN_TIMEOUT_SECONDS = 60


def examples() -> dict[str, str]:
    return {name: code for name, code in EXAMPLE.findall(DOC.read_text())}


def test_the_doc_has_an_example_for_each_pattern() -> None:
    assert set(examples()) == {"short poll", "long poll", "server-sent events", "websocket"}


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_consumer_example_prints_every_event_in_order(
    postgres_url: str, start_server: StartServer, name: str
) -> None:
    server = start_server(postgres_url, workers=2)
    _, key = cli_create_tenant(postgres_url, f"docs-{name}")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, headers=auth) as client:
        for i in range(3):
            assert client.post("/v1/accounts", json={"id": f"a{i}", "currency": "USD"}).is_success
        env = {**os.environ, "TALLY_URL": server.base_url, "TALLY_API_KEY": key}
        env["TALLY_EVENTS_MAX"] = "4"
        example = subprocess.Popen(
            [sys.executable, "-c", examples()[name]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.5)  # the fourth event commits while the consumer waits for it
        assert client.post("/v1/accounts", json={"id": "a3", "currency": "USD"}).is_success
        out, err = example.communicate(timeout=RUN_TIMEOUT_SECONDS)
    assert example.returncode == 0, err
    assert out.splitlines() == [f"{i + 1} account.created a{i}" for i in range(4)], (out, err)
