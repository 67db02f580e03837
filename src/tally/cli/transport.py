"""What ``tally serve`` may ask of each HTTP server, and the TLS they share
(docs/protocols.md). No server is imported here: ``tally serve`` checks a
request before it becomes the server process."""

from __future__ import annotations

import os
import ssl

from tally.config import Settings

# How long a stopping worker lets requests in flight finish (then the writer drains).
GRACEFUL_SHUTDOWN_SECONDS = 10
# How long an idle HTTP/1.1 connection stays open for the client's next request.
# Whatever reuses connections in front of Tally must give them up sooner: a
# proxy's or client's idle timeout at or above this one lets a request leave on
# a connection Tally is closing, and nginx answers a POST lost that way 502
# (deploy/nginx/tally.conf.template keeps its own under this; docs/deploy.md).
KEEP_ALIVE_SECONDS = 5
SERVERS = ("uvicorn", "granian", "hypercorn")
# TLS 1.2 ciphers, all forward-secret AEAD (TLS 1.3's suites are OpenSSL's, all
# AEAD). uvicorn's default ("TLSv1") would offer only CBC suites with SHA-1 MACs.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def transport_problem(server: str, settings: Settings, workers: int) -> str | None:
    """Why ``server`` cannot speak what ``settings`` ask for, or None.

    Checked by ``tally serve`` before it becomes the server, so that a
    combination no server can honour is refused in words, never half-served."""
    if server not in SERVERS:
        return f"unknown server {server!r}"
    if settings.http2 and server == "uvicorn":
        return "uvicorn speaks HTTP/1.1 only: HTTP/2 needs --server granian or hypercorn"
    if settings.quic_port is not None and server != "hypercorn":
        return "HTTP/3 (--quic-port) needs --server hypercorn"
    if server == "hypercorn" and workers != 1:
        # One UDP socket shared by processes would hand a QUIC connection's
        # datagrams to whichever process reads first, and the session tickets of
        # 0-RTT live in one process's memory (docs/protocols.md, HTTP/3 limits).
        return "hypercorn runs one process: --workers 1 (scale out with replicas)"
    for path in (settings.tls_cert, settings.tls_key):
        if path is not None and not os.path.isfile(path):
            return f"no such TLS file: {path}"
    return None


def tls_context(cert: str, key: str, alpn: list[str]) -> ssl.SSLContext:
    """A server context: TLS 1.2 at least (1.3 when the client has it, which
    OpenSSL prefers by itself), forward-secret AEAD ciphers only, ``alpn``
    offered in order."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(alpn)
    return context
