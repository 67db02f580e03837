"""CPU per access line, in isolation: format and write 100,000 lines through the log
configuration `tally serve` uses, to a file; best of three (docs/performance.md).

    .venv/bin/python bench/access_log_line.py
"""

from __future__ import annotations

import logging.config
import os
import tempfile
import time

from tally.api import access_log
from tally.cli.server import log_config

LINES = 100_000
ROUNDS = 3


def main() -> None:
    fd, path = tempfile.mkstemp(suffix=".log")
    os.close(fd)
    config = log_config("info")
    config["handlers"]["default"] = {
        "class": "logging.FileHandler",
        "formatter": "default",
        "filename": path,
    }
    logging.config.dictConfig(config)
    state = {
        "request_id": "req_01M90ZXN57PJV8WQTWC7EM5PWT",
        access_log.ROUTE: "/v1/accounts/{id}",
        access_log.TENANT: "ten_01M90ZWW72GX7CZYZ2FM1ZGMA9",
        access_log.ACTOR: "api_key:nnvxdvlyd237xzbi",
    }
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(LINES):
            access_log.write(state, "GET", "/v1/accounts/cash", 200, 0.00123, "127.0.0.1")
        best = min(best, time.perf_counter() - started)
    os.unlink(path)
    print(f"{best / LINES * 1e6:.1f} µs per line (best of {ROUNDS} x {LINES:,})")


if __name__ == "__main__":
    main()
