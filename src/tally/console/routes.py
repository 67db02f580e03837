"""The console's one route table: every page and form, its scope and its audit
action. ``console_routes`` turns it into Starlette routes (one per path, so a
405 names the methods the path takes); tests/security walks the same table."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.console import admin_pages, auth_pages, ledger_pages
from tally.console.web import ConsoleRoute, Endpoint, StreamOpener, handle
from tally.identity.roles import ADMIN
from tally.services import Services

STYLESHEET_PATH = "/console/console.css"
LIVE_SCRIPT_PATH = "/console/live.js"

CONSOLE_ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("GET", "/console", auth_pages.home),
    ConsoleRoute("GET", "/console/login", auth_pages.login_form, auth=False),
    ConsoleRoute("POST", "/console/login", auth_pages.login, action="login", auth=False),
    ConsoleRoute("POST", "/console/logout", auth_pages.logout, action="logout"),
    ConsoleRoute("GET", "/console/accounts", ledger_pages.accounts, "accounts:read"),
    ConsoleRoute("GET", "/console/accounts/{id}", ledger_pages.account, "accounts:read"),
    ConsoleRoute("GET", "/console/new-account", ledger_pages.new_account_form, "accounts:write"),
    ConsoleRoute(
        "POST",
        "/console/new-account",
        ledger_pages.create_account,
        "accounts:write",
        action="createAccount",
    ),
    ConsoleRoute("GET", "/console/new-transfer", ledger_pages.new_transfer_form, "transfers:write"),
    ConsoleRoute(
        "POST",
        "/console/new-transfer",
        ledger_pages.create_transfer,
        "transfers:write",
        action="createTransfer",
    ),
    ConsoleRoute("GET", "/console/transfers/{id}", ledger_pages.transfer, "transfers:read"),
    ConsoleRoute(
        "POST",
        "/console/transfers/{id}/post",
        ledger_pages.post_transfer,
        "transfers:write",
        action="postTransfer",
    ),
    ConsoleRoute(
        "POST",
        "/console/transfers/{id}/void",
        ledger_pages.void_transfer,
        "transfers:write",
        action="voidTransfer",
    ),
    ConsoleRoute("GET", "/console/events", ledger_pages.events, "events:read"),
    ConsoleRoute("GET", "/console/events/stream", ledger_pages.live_events, "events:read"),
    ConsoleRoute("GET", "/console/api-keys", admin_pages.api_keys, ADMIN),
    ConsoleRoute(
        "POST", "/console/api-keys", admin_pages.create_api_key, ADMIN, action="createApiKey"
    ),
    ConsoleRoute(
        "POST",
        "/console/api-keys/{id}/revoke",
        admin_pages.revoke_api_key,
        ADMIN,
        action="revokeApiKey",
    ),
    ConsoleRoute("GET", "/console/members", admin_pages.members, ADMIN),
    ConsoleRoute(
        "POST", "/console/members", admin_pages.invite_member, ADMIN, action="inviteMember"
    ),
    ConsoleRoute(
        "POST",
        "/console/members/{id}/role",
        admin_pages.change_role,
        ADMIN,
        action="updateMember",
    ),
    ConsoleRoute(
        "POST",
        "/console/members/{id}/disable",
        admin_pages.disable_member,
        ADMIN,
        action="disableMember",
    ),
    ConsoleRoute("GET", "/console/audit", admin_pages.audit, ADMIN),
)


def static_file(name: str) -> bytes:
    return resources.files("tally.console").joinpath(f"static/{name}").read_bytes()


def console_routes(services: Services, open_stream: StreamOpener | None = None) -> list[Route]:
    """The console's routes; ``open_stream`` serves its live event feed (without
    it, the feed's route answers 404 and the events page is refreshed by hand)."""
    by_path: dict[str, dict[str, ConsoleRoute]] = {}
    for route in CONSOLE_ROUTES:
        by_path.setdefault(route.path, {})[route.method] = route
    routes = []
    for path, methods in by_path.items():
        handlers = {
            method: handle(route, services, open_stream) for method, route in methods.items()
        }

        async def dispatch(request: Request, handlers: dict[str, Endpoint] = handlers) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)

        routes.append(Route(path, dispatch, methods=list(handlers)))
    for path, name, media_type in (
        (STYLESHEET_PATH, "console.css", "text/css"),
        (LIVE_SCRIPT_PATH, "live.js", "text/javascript"),
    ):
        routes.append(Route(path, _static(static_file(name), media_type), methods=["GET"]))
    return routes


def _static(body: bytes, media_type: str) -> Endpoint:
    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type)

    return serve
