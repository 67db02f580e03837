"""A client that hangs up halfway through its request body.

Found by bench-smoke in CI: when wrk stopped, requests whose body was still
arriving raised Starlette's ClientDisconnect, which the server logged as an
unhandled error with a traceback. Nothing was wrong but the report: hanging up is
the client's right, nothing was done, and nobody is there to answer.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.e2e.conftest import StartServer, cli_create_tenant

HALF_A_BODY = b'{"debit_account_id": "a", "credit_'


def test_a_client_hanging_up_mid_body_is_not_an_error(
    start_server: StartServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hangup.db'}"
    _, key = cli_create_tenant(url, "hangup")
    server = start_server(url)
    host, port = server.base_url.removeprefix("http://").split(":")
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                + HALF_A_BODY
            )
    # The server goes on serving, and logged no traceback for any of it.
    r = httpx.get(
        f"{server.base_url}/v1/accounts", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert r.status_code == 200
    assert "Traceback" not in server.log_text()
