"""Access logging (``TALLY_ACCESS_LOG``): one line per request, in logfmt (or, with
``TALLY_LOG_FORMAT=json``, one JSON object whose keys are these fields).

A line reads::

    request_id=req_01J... method=GET route=/v1/accounts/{id} path=/v1/accounts/alice
    status=200 duration_ms=0.84 tenant=ten_01J... actor=api_key:4c3h... client=10.0.0.7

``route`` is the route's template (absent when no route matched), so lines
aggregate by operation; ``tenant`` and ``actor`` appear once the caller is known
(an authenticated request, or a login and a sign-up once they succeed). The
query string, headers and body are never logged: they can carry credentials and
tokens. Values a client chose (the path, the method) are quoted and escaped when
they hold anything but plain characters, so a line cannot be forged or split,
and the path is cut at ``PATH_CHARS_MAX``.

The endpoint notes what it learns in the request's scope ``state`` (``note``);
``ApiMiddleware`` times the request and writes the line when the response ends.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

log = logging.getLogger("tally.access")

PATH_CHARS_MAX = 200
_PLAIN = re.compile(r"^[A-Za-z0-9._:/{}@+*-]+$")
# Keys of the scope's state dict; the request id is the middleware's own.
ROUTE, TENANT, ACTOR = "access.route", "access.tenant", "access.actor"


def note(
    state: dict[str, Any] | None,
    *,
    route: str | None = None,
    tenant_id: str | None = None,
    actor: str | None = None,
) -> None:
    """Remember what the endpoint learnt about the request, for its access line."""
    if state is None:
        return
    if route is not None:
        state[ROUTE] = route
    if tenant_id is not None:
        state[TENANT] = tenant_id
    if actor is not None:
        state[ACTOR] = actor


def line(
    state: dict[str, Any],
    method: str,
    path: str,
    status: int,
    duration_seconds: float,
    client: str | None = None,
) -> str:
    fields = _fields(state, method, path, status, duration_seconds, client)
    return " ".join(f"{key}={_value(value)}" for key, value in fields if value is not None)


def _fields(
    state: dict[str, Any],
    method: str,
    path: str,
    status: int,
    duration_seconds: float,
    client: str | None,
) -> list[tuple[str, object]]:
    if len(path) > PATH_CHARS_MAX:
        path = path[:PATH_CHARS_MAX] + "..."
    return [
        ("request_id", state.get("request_id")),
        ("method", method),
        ("route", state.get(ROUTE)),
        ("path", path),
        ("status", status),
        ("duration_ms", f"{duration_seconds * 1000:.2f}"),
        ("tenant", state.get(TENANT)),
        ("actor", state.get(ACTOR)),
        ("client", client),
    ]


def write(
    state: dict[str, Any],
    method: str,
    path: str,
    status: int,
    duration_seconds: float,
    client: str | None,
) -> None:
    fields = _fields(state, method, path, status, duration_seconds, client)
    text = " ".join(f"{key}={_value(value)}" for key, value in fields if value is not None)
    # The text formatter prints the logfmt line; the JSON one (TALLY_LOG_FORMAT=json)
    # also gets each field as a key of its own.
    structured = dict(fields)
    structured["duration_ms"] = round(duration_seconds * 1000, 3)
    log.info("%s", text, extra={"fields": structured})


def _value(value: object) -> str:
    text = str(value)
    return text if _PLAIN.match(text) else json.dumps(text)
