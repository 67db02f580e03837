"""One HTTP attempt of one delivery, over httpx.

The URL is checked again (tally.webhooks.addresses) and the request goes to the
address that was checked, with the URL's host in ``Host`` and as TLS's server
name, so a name that resolves elsewhere a moment later cannot redirect it.
Redirects are never followed (a 3xx is a failed attempt), proxies from the
environment are ignored, every attempt has one deadline for everything
(connect, send, wait, read the status line), and no connection is kept alive:
a pooled TLS connection to one address must never carry another host's request.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import httpx

from tally.errors import UrlNotAllowed
from tally.webhooks.addresses import check

USER_AGENT = "Tally-Webhooks/1"
ERROR_CHARS_MAX = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None  # None: no answer (refused URL, timeout, connection error)
    error: str | None
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=1_000, max_keepalive_connections=0),
    )


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool,
    timeout_seconds: float,
) -> Attempt:
    try:
        async with asyncio.timeout(timeout_seconds):
            return await _post(client, url, body, headers, allow_loopback, timeout_seconds)
    except UrlNotAllowed as exc:
        return Attempt(None, f"url_not_allowed: {exc.detail}")
    except TimeoutError:
        return Attempt(None, f"timed out after {timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX])
    except OSError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX])


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow_loopback: bool,
    timeout_seconds: float,
) -> Attempt:
    target, addresses = await check(url, allow_loopback=allow_loopback)
    address = addresses[0]
    at = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    host_header = host if target.port == default_port else f"{host}:{target.port}"
    extensions = {}
    if target.scheme == "https" and not _is_literal(target.host):
        extensions["sni_hostname"] = target.host
    request = client.build_request(
        "POST",
        f"{target.scheme}://{at}:{target.port}{target.path}",
        content=body,
        headers={
            **headers,
            "host": host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        },
        timeout=httpx.Timeout(timeout_seconds),
        extensions=extensions,
    )
    response = await client.send(request, stream=True)
    try:
        retry_after = response.headers.get("retry-after")
        return Attempt(response.status_code, _error_of(response), retry_after)
    finally:
        await response.aclose()


def _error_of(response: httpx.Response) -> str | None:
    status = response.status_code
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
