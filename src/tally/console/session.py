"""The console's session cookie, and the synchronizer token of its forms.

The cookie holds the identity service's own session: the access token and the
refresh token that ``Identity.login`` answered, nothing else (the console keeps
no state of its own). It is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it), ``Path=/console`` (the API never receives it:
the API takes bearer tokens only, so it stays free of CSRF) and ``Secure`` when
the request came over TLS.

The synchronizer token of every form is an HMAC of a fixed label keyed by the
session's refresh token: a secret only the cookie holds (and the server, as its
SHA-256), so no other origin can compute it, and it needs no storage. It
changes when the session is refreshed, so a form rendered before a refresh in
another tab asks to be sent again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tally.config import Settings

COOKIE = "tally_console"
# Before login there is no session: the login form is protected by a random value
# both in a cookie of its own and in the form (double submit), and by Origin.
LOGIN_COOKIE = "tally_console_login"
COOKIE_PATH = "/console"
_SEPARATOR = "|"
_CSRF_LABEL = b"tally-console-csrf-v1"
LOGIN_TOKEN_CHARS_MAX = 128
TOKEN_CHARS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Session:
    access_token: str
    refresh_token: str


def from_cookie(request: Request) -> Session | None:
    raw = request.cookies.get(COOKIE, "")
    if not raw or len(raw) > TOKEN_CHARS_MAX or raw.count(_SEPARATOR) != 1:
        return None
    access, refresh = raw.split(_SEPARATOR)
    return Session(access, refresh) if access and refresh else None


def csrf_token(session: Session) -> str:
    return hmac.new(session.refresh_token.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, session: Session, request: Request, settings: Settings) -> None:
    response.set_cookie(
        COOKIE,
        f"{session.access_token}{_SEPARATOR}{session.refresh_token}",
        max_age=settings.session_ttl_seconds,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def login_token(request: Request) -> tuple[str, bool]:
    """The login form's token, and whether it is new (its cookie must be set)."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    if 32 <= len(current) <= LOGIN_TOKEN_CHARS_MAX:
        return current, False
    return secrets.token_urlsafe(32), True


def set_login_cookie(response: Response, token: str, request: Request) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )


def login_token_matches(request: Request, given: str) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
