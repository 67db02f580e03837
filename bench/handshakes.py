"""What a new connection costs before Tally sees a request: TCP, TLS 1.2 and 1.3,
and QUIC with and without 0-RTT, on one ``tally serve --server hypercorn``.

    .venv/bin/python bench/handshakes.py [--runs 30]

Over TCP, curl (a fresh process and connection per run) reports when the TCP
connection was up, when TLS was, and when the first byte of ``GET /healthz``
came back. Over QUIC, the aioquic client of tests/h3_client.py times the same
GET on a fresh connection: with a full handshake, and resumed with a session
ticket, the GET sent as 0-RTT early data. Medians in ms. On loopback a round trip
is ~0.05 ms, so these figures are the handshakes' CPU, not their round trips;
docs/protocols.md counts the round trips. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import procs, server
from protocols import make_tls  # also puts the repository on sys.path
from tests.h3_client import h3_connect

CURL_TIMEOUT_SECONDS = 10


def curl_times(base_url: str, ca: Path, tls_max: str) -> tuple[float, float, float]:
    """(TCP connected, TLS done, first byte) in ms for one new connection."""
    done = subprocess.run(
        [
            "curl", "-sS", "-o", "/dev/null", "--cacert", str(ca), "--http1.1",
            "--tls-max", tls_max, "-w", "%{time_connect} %{time_appconnect} %{time_starttransfer}",
            f"{base_url}/healthz",
        ],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_SECONDS, check=True,
    )  # fmt: skip
    connect, tls, first = (float(x) * 1000 for x in done.stdout.split())
    return connect, tls, first


async def quic_times(port: int, ca: Path, runs: int) -> dict[str, list[float]]:
    """First response of GET /healthz on new QUIC connections, in ms."""
    times: dict[str, list[float]] = {"handshake": [], "full": [], "0-RTT": []}
    loop = asyncio.get_running_loop()
    for _ in range(runs):
        tickets: list[object] = []
        started = loop.time()
        async with h3_connect("127.0.0.1", port, ca_path=ca, tickets=tickets) as client:
            times["handshake"].append((loop.time() - started) * 1000)
            assert (await client.request("GET", "/healthz")).status == 200
            times["full"].append((loop.time() - started) * 1000)
        started = loop.time()
        async with h3_connect(
            "127.0.0.1", port, ca_path=ca, session_ticket=tickets[-1], wait_connected=False
        ) as client:  # fmt: skip
            assert (await client.request("GET", "/healthz")).status == 200
            times["0-RTT"].append((loop.time() - started) * 1000)
            await client.handshake_completed()
            assert client.early_data_accepted
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="connections of each kind (30)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs 1…1000")
    children = procs.Children()
    work = Path(tempfile.mkdtemp(prefix="tally-handshakes-"))
    try:
        ca, cert, key = make_tls(work)
        url = f"sqlite:///{work / 'tally.db'}"
        server.migrate(url)
        quic_port = procs.free_port()
        running = server.serve(
            children, url, 1, work / "tally.log", "hypercorn", tls_ca=ca,
            tls_cert=str(cert), tls_key=str(key), quic_port=str(quic_port),
        )  # fmt: skip
        rows = []
        for version in ("1.2", "1.3"):
            runs = [curl_times(running.base_url, ca, version) for _ in range(args.runs)]
            connect, tls, first = (statistics.median(r[i] for r in runs) for i in range(3))
            rows.append((f"TCP + TLS {version}, HTTP/1.1", connect, tls, first))
        quic = asyncio.run(quic_times(quic_port, ca, args.runs))
        handshake = statistics.median(quic["handshake"])
        rows.append(
            ("QUIC, HTTP/3, full handshake", None, handshake, statistics.median(quic["full"]))
        )
        rows.append(("QUIC, HTTP/3, 0-RTT GET", None, None, statistics.median(quic["0-RTT"])))
    finally:
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nGET /healthz on a new connection, medians of {args.runs}, ms, loopback:\n")
    print("| connection | TCP up | handshake done | first response byte |")
    print("| --- | ---: | ---: | ---: |")
    for name, *figures in rows:
        cells = " | ".join("—" if f is None else f"{f:.2f}" for f in figures)
        print(f"| {name} | {cells} |")
    print(f"\n({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
