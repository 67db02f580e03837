"""schemathesis against the served ``/openapi.json``: every check, valid and invalid data.

A real ``tally serve`` (once on SQLite, once on PostgreSQL) is tested by the
``st`` command with an API key from ``tally tenants create --json``: every phase
(examples, coverage, fuzzing, stateful), positive and negative data, every check
but one: ``positive_data_acceptance`` is replaced by a stricter check of our own
(``schemathesis_hooks.py``) that lets schema-valid input be refused only for the
reasons no JSON Schema can state, named by problem code. ``schemathesis.toml``
holds the one per-operation setting. Zero failures is the bar: a failure is a bug
in the server or in the document, to be fixed, not excluded.

The CI version generates ``MAX_EXAMPLES`` cases per operation and phase;
``TALLY_SOAK=1`` many more. ``TALLY_E2E_SEED`` replays a seed.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import StartServer, cli_create_tenant

pytestmark = pytest.mark.slow

SOAK = os.environ.get("TALLY_SOAK") == "1"
SEED = int(os.environ.get("TALLY_E2E_SEED", str(random.randrange(2**32))))
MAX_EXAMPLES = 500 if SOAK else 25
RUN_TIMEOUT_SECONDS = 5_400 if SOAK else 300
REQUEST_TIMEOUT_SECONDS = 10
ST = Path(sys.executable).parent / "st"
HERE = Path(__file__).parent
ROOT = HERE.parent.parent
OUTPUT_TAIL_CHARS = 20_000


def test_schemathesis_finds_no_failure(
    database_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    _, api_key = cli_create_tenant(database_url, "schemathesis")
    # An event stream ends after 0.2 s here (an hour by default), so that each case
    # of GET /v1/events/stream gets its whole answer within the request timeout.
    server = start_server(database_url, events_stream_seconds_max="0.2")
    args = [
        str(ST),
        "--config-file", str(HERE / "schemathesis.toml"),
        "--no-color",
        "run", f"{server.base_url}/openapi.json",
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", str(REQUEST_TIMEOUT_SECONDS),
        "--header", f"Authorization: Bearer {api_key}",
        "--report", "junit",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    output = done.stdout + done.stderr
    summary = re.search(r"Test cases:\s*\n\s*(.+)", output)
    print(
        f"\nschemathesis on {database_url.partition(':')[0]}: seed {SEED}, "
        f"--max-examples {MAX_EXAMPLES}: {summary.group(1) if summary else '?'}; "
        f"{output.strip().splitlines()[-1] if output.strip() else ''}"
    )
    assert done.returncode == 0, output[-OUTPUT_TAIL_CHARS:]
    assert "Traceback" not in server.log_text(), server.log_tail()
