"""What ``tally serve`` asks of its server's transport (docs/protocols.md), in
process: which combinations are refused and why, the TLS context's floor and
ciphers, the session-ticket store's bounds, and ``tally dev-cert``'s files.
tests/e2e/test_protocols.py runs the real servers with real clients."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from pydantic import ValidationError
from typer.testing import CliRunner

from tally.cli import app
from tally.cli.hypercorn_server import SessionTickets, hypercorn_config
from tally.cli.transport import KEEP_ALIVE_SECONDS, tls_context, transport_problem
from tally.config import Settings


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    done = CliRunner().invoke(app, ["dev-cert", "--dir", str(directory)])
    assert done.exit_code == 0, done.output
    return directory


def _settings(pair: Path, **fields: object) -> Settings:
    tls = {"tls_cert": str(pair / "cert.pem"), "tls_key": str(pair / "key.pem")}
    return Settings(**{**tls, **fields})  # type: ignore[arg-type]


def test_dev_cert_makes_a_ca_and_a_localhost_certificate_it_signed(pair: Path) -> None:
    ca = x509.load_pem_x509_certificate((pair / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((pair / "cert.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert {str(n.value) for n in names} == {"localhost", "127.0.0.1", "::1"}
    assert stat.S_IMODE((pair / "key.pem").stat().st_mode) == 0o600
    context = ssl.create_default_context(cafile=str(pair / "ca.pem"))
    assert context.get_ca_certs()


def test_the_tls_context_has_a_tls_12_floor_and_only_forward_secret_aead_ciphers(
    pair: Path,
) -> None:
    context = tls_context(str(pair / "cert.pem"), str(pair / "key.pem"), ["http/1.1"])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12), tls12


@pytest.mark.parametrize(
    ("server", "fields", "workers", "said"),
    [
        ("uvicorn", {}, 4, None),
        ("granian", {"http2": True}, 2, None),
        ("hypercorn", {"http2": True, "quic_port": 8443}, 1, None),
        ("uvicorn", {"http2": True}, 1, "uvicorn speaks HTTP/1.1 only"),
        ("granian", {"quic_port": 8443}, 1, "HTTP/3 (--quic-port) needs --server hypercorn"),
        ("hypercorn", {}, 2, "hypercorn runs one process"),
        ("nginx", {}, 1, "unknown server"),
    ],
)
def test_a_server_is_refused_what_it_cannot_speak(
    pair: Path, server: str, fields: dict[str, object], workers: int, said: str | None
) -> None:
    problem = transport_problem(server, _settings(pair, **fields), workers)
    assert problem == said if said is None else said in (problem or ""), problem


def test_a_missing_certificate_file_is_named(pair: Path, tmp_path: Path) -> None:
    settings = _settings(pair, tls_key=str(tmp_path / "gone.pem"))
    assert transport_problem("granian", settings, 1) == f"no such TLS file: {tmp_path}/gone.pem"


def test_tls_settings_come_as_a_pair_and_quic_needs_them() -> None:
    with pytest.raises(ValidationError, match="set both or neither"):
        Settings(tls_cert="cert.pem")
    with pytest.raises(ValidationError, match="QUIC has no plain-text mode"):
        Settings(quic_port=8443)


def test_hypercorn_advertises_http3_by_alt_svc_and_h2_only_when_asked(pair: Path) -> None:
    config = hypercorn_config(_settings(pair, http2=True, quic_port=8443), "::1", 8000)
    assert config.bind == ["[::1]:8000"] and config.quic_bind == ["[::1]:8443"]
    assert config.alt_svc_headers == ['h3=":8443"; ma=86400']
    assert config.alpn_protocols == ["h2", "http/1.1"]
    plain = hypercorn_config(_settings(pair), "127.0.0.1", 8000)
    assert plain.alpn_protocols == ["http/1.1"] and plain.alt_svc_headers == []
    assert plain.keep_alive_timeout == KEEP_ALIVE_SECONDS  # as uvicorn's (deploy/nginx)


class _Ticket:
    def __init__(self, label: bytes) -> None:
        self.ticket = label


def test_a_session_ticket_is_handed_out_once_and_the_store_is_bounded() -> None:
    tickets = SessionTickets(size_max=2)
    for label in (b"a", b"b", b"c"):
        tickets.add(_Ticket(label))  # type: ignore[arg-type]
    assert len(tickets) == 2
    assert tickets.pop(b"a") is None  # the oldest was forgotten
    assert tickets.pop(b"b") is not None
    assert tickets.pop(b"b") is None  # a replayed ticket finds nothing
    off = SessionTickets(size_max=0)
    off.add(_Ticket(b"x"))  # type: ignore[arg-type]
    assert len(off) == 0
