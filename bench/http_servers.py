"""What the HTTP server itself costs per request: uvicorn and granian, side by side.

    .venv/bin/python bench/http_servers.py [--rounds 3] [--seconds 8] [--clients 64]

One ``tally serve --workers 1 --server S`` (SQLite in a temporary directory, rate
limits out of the way) per server and round, alternating uvicorn and granian so
that the rest of the machine's load hurts both alike; wrk sends ``GET /healthz``
(a constant answer: no authentication, no database) over ``--clients``
connections, and the server's processes are sampled with psutil. Reported per
run: requests/s, p99, and **CPU µs per request** of the server's processes: on
this route that is almost all HTTP server, ASGI and Tally's middleware, the part
of every request that ``--server`` changes. ``bench/run.py --server`` measures the
whole transfer path under each. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import load, procs, server

SERVERS = ("uvicorn", "granian")
WRK_GRACE_SECONDS = 30.0
_REQUESTS = re.compile(r"(\d+) requests in")
_P99 = re.compile(r"^\s+99%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_ERRORS = re.compile(r"Socket errors: .*|Non-2xx or 3xx responses: \d+")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def one_run(
    children: procs.Children, name: str, clients: int, seconds: int, work: Path
) -> dict[str, float | str]:
    url = f"sqlite:///{work / f'{name}.db'}"
    server.migrate(url)
    running = server.serve(children, url, 1, work / f"{name}.log", name)
    try:
        argv = [
            load.wrk_path(), "-t1", f"-c{clients}", f"-d{seconds}s", "--latency",
            f"{running.base_url}/healthz",
        ]  # fmt: skip
        out_path = work / f"wrk-{name}.out"
        with out_path.open("wb") as out:
            started = time.time()
            proc = children.start(argv, log=out)
            sampler = procs.Sampler({"tally": (procs.tree(running.pid), False)})
            sampler.start(since=started)
            exited = procs.wait_exited(proc, seconds + WRK_GRACE_SECONDS)
            usage = sampler.stop()
            children.stop(proc)
    finally:
        server.stop(children, running)
    text = out_path.read_text(errors="replace")
    requests = _REQUESTS.search(text)
    p99 = _P99.search(text)
    if not exited or requests is None or p99 is None:
        raise RuntimeError(f"wrk failed against {name}:\n{text[-2000:]}")
    if _ERRORS.search(text):
        raise RuntimeError(f"errors against {name}: {_ERRORS.findall(text)}")
    n = int(requests.group(1))
    cpu_s = usage["tally"]["cpu_seconds"]
    return {
        "server": name,
        "requests_per_s": n / sampler.wall_seconds,
        "p99_ms": float(p99.group(1)) * _UNIT_MS[p99.group(2)],
        "cpu_us_per_request": cpu_s / n * 1e6,
        "cpu_percent": usage["tally"]["cpu_percent"],
        "machine_cpu_percent": usage["machine"]["cpu_percent"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per server (3)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per run (8)")
    parser.add_argument("--clients", type=int, default=64, help="wrk connections (64)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 1 <= args.seconds <= 120 and 1 <= args.clients <= 1000):
        parser.error("--rounds 1…20, --seconds 1…120, --clients 1…1000")
    children = procs.Children()
    work = Path(tempfile.mkdtemp(prefix="tally-http-servers-"))
    runs = []
    try:
        for round_n in range(1, args.rounds + 1):
            for name in SERVERS:
                run = one_run(children, name, args.clients, args.seconds, work)
                print(
                    f"round {round_n} {name:8} {run['requests_per_s']:>9,.0f} req/s  "
                    f"p99 {run['p99_ms']:>7.2f} ms  "
                    f"{run['cpu_us_per_request']:>6.1f} µs CPU/request  "
                    f"(server {run['cpu_percent']:.0f} %, machine "
                    f"{run['machine_cpu_percent']:.0f} %)",
                    flush=True,
                )
                runs.append(run)
    finally:
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nGET /healthz, {args.clients} connections, 1 worker, medians of {args.rounds}:")
    for name in SERVERS:
        mine = [r for r in runs if r["server"] == name]
        rps = statistics.median(float(r["requests_per_s"]) for r in mine)
        cpu = statistics.median(float(r["cpu_us_per_request"]) for r in mine)
        p99 = statistics.median(float(r["p99_ms"]) for r in mine)
        print(f"  {name:8} {rps:>9,.0f} req/s  p99 {p99:>7.2f} ms  {cpu:>6.1f} µs CPU/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
