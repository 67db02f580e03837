"""Logging in and out: the identity service's own sessions, kept in a cookie.

Login goes through ``Identity.login`` with the same rate limits (per email and per
address) and the same audit row as ``POST /v1/auth/login``; logout ends the
session on the server (``Identity.logout``), not only the cookie.
"""

from __future__ import annotations

from starlette.responses import Response

from tally.console import session as sessions
from tally.console.web import HOME_PATH, LOGIN_PATH, PREFIX, SignInNeeded, Visit
from tally.errors import Forbidden, TallyError
from tally.identity.service import EMAIL_CHARS_MAX

PASSWORD_CHARS_MAX = 1024  # the policy's 128 after normalisation; generous before


def _next_path(raw: str) -> str:
    """Only a console page: never another site (an open redirect)."""
    if raw.startswith(f"{PREFIX}/") and not raw.startswith("//") and "\\" not in raw:
        return raw if raw.isascii() and raw.isprintable() else HOME_PATH
    return HOME_PATH


def _login_page(visit: Visit, *, email: str = "", error: str = "", status: int = 200) -> Response:
    token, new = sessions.login_token(visit.request)
    response = visit.page(
        "login.html",
        status,
        login_token=token,
        email=email,
        error=error,
        next=_next_path(visit.query("next", 512)),
    )
    if new:
        sessions.set_login_cookie(response, token, visit.request)
    return response


async def login_form(visit: Visit) -> Response:
    return _login_page(visit)


async def login(visit: Visit) -> Response:
    form, services = visit.form, visit.services
    if not sessions.login_token_matches(visit.request, form.raw("login_token")):
        raise Forbidden("This login form has expired: reload the page and log in again.")
    email, password = form.text("email")[:EMAIL_CHARS_MAX], form.raw("password")
    if not email or not password or len(password) > PASSWORD_CHARS_MAX:
        visit.audit_code = "validation_error"
        return _login_page(visit, email=email, error="Enter your email and password.", status=422)
    try:
        await services.limits.for_login(email, visit.client_address)
        pair = await services.identity.login(email, password, visit.audit_of())
    except TallyError as error:
        if error.code not in ("unauthenticated", "rate_limited"):
            raise
        status = 401 if error.code == "unauthenticated" else 429
        visit.audit_code = error.code
        return _login_page(visit, email=email, error=error.detail or "", status=status)
    response = visit.see_other(_next_path(form.raw("next")))
    session = sessions.Session(pair.access_token, pair.refresh_token)
    sessions.set_cookie(response, session, visit.request, services.settings)
    response.delete_cookie(sessions.LOGIN_COOKIE, path=sessions.COOKIE_PATH)
    return response


async def logout(visit: Visit) -> Response:
    await visit.services.identity.logout(visit.principal, visit.audit_of())
    response = visit.see_other(LOGIN_PATH)
    sessions.clear_cookie(response, visit.request)
    return response


async def home(visit: Visit) -> Response:
    if visit.principal_or_none is None:
        raise SignInNeeded()
    return visit.see_other(HOME_PATH)
