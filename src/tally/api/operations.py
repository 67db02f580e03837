"""The routes outside ``/v1``: liveness, readiness, metrics, and the API's own
document and its reference page (rendered by ``reference``, with its stylesheet)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tally.api import reference
from tally.api.openapi import build_openapi
from tally.api.problems import problem_response
from tally.api.responses import encode
from tally.errors import TallyError
from tally.services import Services


def operation_routes(services: Services) -> list[Route]:
    document = build_openapi()
    openapi_json = encode(document)
    # Built once: the document, and so the page, is fixed for the life of the process.
    reference_html = reference.render(document)
    stylesheet = reference.stylesheet()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        try:
            await services.store.ping()
        except TallyError as error:
            return problem_response(error, request)
        return Response(b'{"status":"ready"}', media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return Response(openapi_json, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(reference_html, headers={"Content-Security-Policy": reference.CSP})

    async def docs_stylesheet(request: Request) -> Response:
        return Response(stylesheet, media_type="text/css")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route(reference.STYLESHEET_PATH, docs_stylesheet, methods=["GET"]),
    ]
