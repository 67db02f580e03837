"""A replicated PostgreSQL on loopback ports: three etcd members and three Patroni
nodes (PostgreSQL 15, synchronous replication), for ``make ha-test``.

Everything runs from Debian's packages (etcd-server, patroni, postgresql-15) as the
``postgres`` user in a directory of its own, and is stopped, every process group,
when the context ends. Each node is a Patroni process and the PostgreSQL it
starts; ``kill`` SIGKILLs both at once, as a machine that dies would.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MEMBERS = 3
UP_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 10.0
# Patroni's clock: a leader that stops renewing its key loses it after TTL_SECONDS.
TTL_SECONDS, LOOP_WAIT_SECONDS, RETRY_TIMEOUT_SECONDS = 20, 2, 5


@dataclass
class Node:
    name: str
    pg_port: int
    rest_port: int
    process: subprocess.Popen[bytes] | None = None

    def role(self) -> str | None:
        """``master``/``primary``, ``replica``, or None when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.rest_port}/patroni", timeout=1
            ) as r:
                state = json.loads(r.read())
        except (OSError, ValueError):
            return None
        return str(state.get("role")) if state.get("state") == "running" else None


@dataclass
class Cluster:
    directory: Path
    nodes: list[Node]
    etcd: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The multi-host URL Tally uses: libpq and asyncpg try each host in turn
        and keep the one that takes writes."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql://postgres@{hosts}/tally?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = "tally") -> str:
        return f"postgresql://postgres@127.0.0.1:{node.pg_port}/{database}"

    def leader(self, timeout_seconds: float = UP_TIMEOUT_SECONDS) -> Node:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.role() in ("master", "primary"):
                    return node
            time.sleep(0.2)
        raise AssertionError(f"no leader within {timeout_seconds} s:\n{self.logs()}")

    def wait_replicas(self, count: int) -> None:
        deadline = time.monotonic() + UP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if sum(n.process is not None and n.role() == "replica" for n in self.nodes) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"fewer than {count} replicas:\n{self.logs()}")

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Patroni and its PostgreSQL, all at once."""
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)
        postmaster = self.directory / node.name / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGKILL)
        node.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        node.process = None

    def logs(self) -> str:
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def _as_postgres() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    uid, gid = _as_postgres()
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            user=uid, group=gid, extra_groups=[], start_new_session=True,
            env={"PATH": f"{PG_BIN}:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"},
        )  # fmt: skip


def _etcd(directory: Path) -> list[subprocess.Popen[bytes]]:
    client = [free_port() for _ in range(MEMBERS)]
    peer = [free_port() for _ in range(MEMBERS)]
    initial = ",".join(f"e{i}=http://127.0.0.1:{peer[i]}" for i in range(MEMBERS))
    processes = []
    for i in range(MEMBERS):
        args = [
            "etcd", "--name", f"e{i}", "--data-dir", str(directory / f"etcd{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "tally-ha",
        ]  # fmt: skip
        processes.append(_start(args, directory / f"etcd{i}.log", directory))
    (directory / "etcd-hosts").write_text(",".join(f"127.0.0.1:{p}" for p in client))
    return processes


def _patroni_config(directory: Path, node: Node, etcd_hosts: str) -> Path:
    config = {
        "scope": "tally-ha",
        "name": node.name,
        "restapi": {
            "listen": f"127.0.0.1:{node.rest_port}",
            "connect_address": f"127.0.0.1:{node.rest_port}",
        },
        "etcd3": {"hosts": etcd_hosts},
        "bootstrap": {
            "dcs": {
                "ttl": TTL_SECONDS,
                "loop_wait": LOOP_WAIT_SECONDS,
                "retry_timeout": RETRY_TIMEOUT_SECONDS,
                "maximum_lag_on_failover": 1_048_576,
                # Every commit waits for a standby's flush; only such a standby
                # may be promoted. So an acknowledged commit survives the primary.
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "max_connections": 100,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
            ],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(directory / node.name),
            "bin_dir": str(PG_BIN),
            "pgpass": str(directory / f"{node.name}.pgpass"),
            "authentication": {
                "superuser": {"username": "postgres"},
                "replication": {"username": "postgres"},
            },
            "parameters": {"unix_socket_directories": str(directory)},
        },
    }
    path = directory / f"{node.name}.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@contextlib.contextmanager
def patroni_cluster() -> Iterator[Cluster]:
    for tool in ("etcd", "patroni"):
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is not installed: apt-get install etcd-server patroni")
    directory = Path(tempfile.mkdtemp(prefix="tally-ha-"))
    uid, gid = _as_postgres()
    os.chown(directory, uid, gid)
    directory.chmod(0o700)
    nodes = [Node(f"pg{i}", free_port(), free_port()) for i in range(MEMBERS)]
    cluster = Cluster(directory, nodes)
    try:
        cluster.etcd = _etcd(directory)
        hosts = (directory / "etcd-hosts").read_text()
        for i, node in enumerate(nodes):
            config = _patroni_config(directory, node, hosts)
            os.chown(config, uid, gid)
            log = directory / f"{node.name}.log"
            node.process = _start(["patroni", str(config)], log, directory)
            if i == 0:
                cluster.leader()  # the first bootstraps; the others clone it
        cluster.wait_replicas(MEMBERS - 1)
        yield cluster
    finally:
        _stop_all(cluster)
        shutil.rmtree(directory, ignore_errors=True)


def _stop_all(cluster: Cluster) -> None:
    processes = [n.process for n in cluster.nodes if n.process is not None] + cluster.etcd
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    # PostgreSQL runs in Patroni's group; make sure no postmaster is left behind.
    for node in cluster.nodes:
        with contextlib.suppress(OSError, ValueError):
            pid = int((cluster.directory / node.name / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
