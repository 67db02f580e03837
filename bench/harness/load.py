"""The load generator: wrk, driven by ``bench/lua/transfers.lua``.

wrk is C with an epoll loop per thread; the Lua script builds each request and
reads each response. Its own CPU is sampled like the server's, so a run where
wrk itself ran out of CPU is visible (``load_generator_saturated``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from harness import procs

LUA = Path(__file__).resolve().parent.parent / "lua" / "transfers.lua"
# Far above any latency we expect: a slow answer is measured, not cut off.
WRK_TIMEOUT_SECONDS = 10
WRK_GRACE_SECONDS = 30.0
# wrk is one epoll loop per thread: near one core per thread it is the bottleneck.
SATURATED_CPU_PERCENT_PER_THREAD = 80.0


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    return found


def run_wrk(
    children: procs.Children,
    *,
    base_url: str,
    api_key: str,
    clients: int,
    threads: int,
    duration_seconds: int,
    batch_size: int,
    accounts_n: int,
    hot_pct: int = 0,
    groups: dict[str, tuple[procs.Finder, bool]],
    work_dir: Path,
) -> dict[str, Any]:
    """Run wrk once; returns the Lua summary plus CPU/memory of every group and wrk."""
    threads = max(1, min(threads, clients))
    name = f"wrk-b{batch_size}-c{clients}-h{hot_pct}-{secrets.token_hex(3)}"
    out_json = work_dir / f"{name}.json"
    log = work_dir / f"{name}.out"
    env = dict(os.environ)
    env.update(
        BENCH_API_KEY=api_key,
        BENCH_OUT=str(out_json),
        BENCH_BATCH=str(batch_size),
        BENCH_ACCOUNTS=str(accounts_n),
        BENCH_RUN=secrets.token_hex(3),
        BENCH_HOT_PCT=str(hot_pct),
    )
    argv = [
        wrk_path(), "-t", str(threads), "-c", str(clients), "-d", f"{duration_seconds}s",
        "--timeout", f"{WRK_TIMEOUT_SECONDS}s", "-s", str(LUA), f"{base_url}/",
    ]  # fmt: skip
    with log.open("wb") as out:
        started = time.time()
        proc = children.start(argv, env=env, log=out)
        sampler = procs.Sampler({**groups, "wrk": (procs.single(proc.pid), False)})
        sampler.start(since=started)
        exited = procs.wait_exited(proc, duration_seconds + WRK_GRACE_SECONDS)
        usage = sampler.stop()
        children.stop(proc)
    text = log.read_text(errors="replace")
    if not exited or proc.returncode != 0 or not out_json.exists():
        raise RuntimeError(
            f"wrk (-c {clients}, batch {batch_size}) failed with {proc.returncode}:\n{text[-3000:]}"
        )
    summary: dict[str, Any] = json.loads(out_json.read_text())
    summary["wrk_threads"] = threads
    summary["resources"] = usage
    summary["load_generator_saturated"] = (
        usage["wrk"]["cpu_percent"] >= SATURATED_CPU_PERCENT_PER_THREAD * threads
    )
    return summary
