"""Real load balancers in front of real ``tally serve`` processes: nginx (L7) and
HAProxy (L4), started on free loopback ports from the configurations in
``deploy/``, rendered the way a deployment renders them (the ``${TALLY_*}``
placeholders filled in, nothing else changed).

The proxies are Debian's packages, installed by ``.ci/run``. A test never installs
anything: when one is missing it fails and says what to install.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PLACEHOLDER = re.compile(r"\$\{(TALLY_[A-Z_]+)\}")
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


def require(binary: str, package: str) -> str:
    """The path of a proxy binary, or a failure naming the package to install."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        if os.environ.get("TALLY_TEST_SKIP_PROXIES") == "1":
            pytest.skip(f"{binary} is not installed (TALLY_TEST_SKIP_PROXIES=1)")
        pytest.fail(
            f"{binary} is not installed: `apt-get install {package}` (.ci/run does), "
            "or set TALLY_TEST_SKIP_PROXIES=1 to skip the load balancer tests knowingly",
            pytrace=False,
        )
    return path


def render(template: Path, **values: str) -> str:
    """``template`` with every ``${TALLY_NAME}`` replaced by ``values["NAME"]``;
    a placeholder without a value is an error, never left in."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).removeprefix("TALLY_")
        if name not in values:
            raise KeyError(f"{template.name}: no value for {match.group(0)}")
        return values[name]

    return PLACEHOLDER.sub(fill, template.read_text())


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the client trusts the certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tally-test")])
    now = datetime.datetime.now(datetime.UTC)
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the proxy exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"the proxy did not listen on {port}:\n{log.read_text()}")


@contextlib.contextmanager
def running(args: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_listening(port, process, log)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def nginx(directory: Path, port: int, upstreams: list[int]) -> Iterator[Path]:
    """nginx on 127.0.0.1:``port`` (TLS, HTTP/2) in front of ``upstreams``; yields
    the certificate a client should trust."""
    binary = require("nginx", "nginx-light")
    cert, key = self_signed(directory)
    servers = "\n".join(
        f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in upstreams
    )
    site = render(
        DEPLOY / "nginx" / "tally.conf.template",
        LISTEN=f"127.0.0.1:{port}",
        UPSTREAM_SERVERS=servers,
        TLS_CERTIFICATE=str(cert),
        TLS_CERTIFICATE_KEY=str(key),
    )
    (directory / "tally.conf").write_text(site)
    # The test's own main configuration: foreground, files under the test's
    # directory, workers as the user running the test (nginx.conf is the
    # deployment's; only tally.conf is under test here).
    user = "user root root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"{user}\ndaemon off;\nworker_processes 2;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {directory}/body;\n"
        f"  proxy_temp_path {directory}/proxy;\n  include {directory}/tally.conf;\n}}\n"
    )
    args = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    args += ["-e", str(directory / "error.log")]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    with running(args, port, directory / "nginx.out"):
        yield cert


@contextlib.contextmanager
def haproxy(directory: Path, port: int, upstreams: list[int]) -> Iterator[None]:
    """HAProxy on 127.0.0.1:``port`` (TCP) in front of ``upstreams``."""
    binary = require("haproxy", "haproxy")
    servers = "\n".join(f"    server tally{i} 127.0.0.1:{p} check" for i, p in enumerate(upstreams))
    config = render(
        DEPLOY / "haproxy" / "haproxy.cfg.template",
        LISTEN=f"127.0.0.1:{port}",
        BACKEND_SERVERS=servers,
    )
    path = directory / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with running([binary, "-db", "-f", str(path)], port, directory / "haproxy.out"):
        yield
