"""The GraphiQL page at ``/graphiql``, from files vendored beside this module.

No CDN: the page, GraphiQL, React and the start-up script are all served by
Tally (``static/README.md`` records their versions and licences), under a
Content-Security-Policy as strict as ``/docs``'s: scripts and styles from this
origin only, never inline, nothing from a third party. GraphiQL's stylesheet
embeds its fonts and icons as ``data:`` URLs, so fonts and images may also be
those; it talks to ``/graphql`` only (``connect-src 'self'``).
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

PAGE_PATH = "/graphiql"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "font-src 'self' data:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# The files the page loads, in the order it loads them, with their media types.
ASSETS = (
    ("graphiql.min.css", "text/css"),
    ("page.css", "text/css"),
    ("react.production.min.js", "text/javascript"),
    ("react-dom.production.min.js", "text/javascript"),
    ("graphiql.min.js", "text/javascript"),
    ("init.js", "text/javascript"),
)


def asset_path(name: str) -> str:
    return f"{PAGE_PATH}/{name}"


def page() -> str:
    styles = "".join(
        f'<link rel="stylesheet" href="{asset_path(n)}">' for n, t in ASSETS if t == "text/css"
    )
    scripts = "".join(
        f'<script src="{asset_path(n)}"></script>' for n, t in ASSETS if t == "text/javascript"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>Tally GraphiQL</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'{styles}</head>\n<body><div id="graphiql">Loading GraphiQL…</div>\n{scripts}'
        "\n</body></html>\n"
    )


def graphiql_routes() -> list[Route]:
    html = page()

    async def serve_page(request: Request) -> Response:
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP})

    routes = [Route(PAGE_PATH, serve_page, methods=["GET"])]
    static = resources.files("tally.api.graphql").joinpath("static")
    for name, media_type in ASSETS:
        content = static.joinpath(name).read_bytes()

        async def serve_asset(
            request: Request, content: bytes = content, media_type: str = media_type
        ) -> Response:
            # Cache-Control stays the API's no-store (docs/security.md): the files are
            # small beside what a page of GraphQL results weighs.
            return Response(content, media_type=media_type)

        routes.append(Route(asset_path(name), serve_asset, methods=["GET"]))
    return routes
