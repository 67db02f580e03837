"""OpenTelemetry traces (``TALLY_OTEL_TRACES``), off by default.

When on, every HTTP request is a server span (method, route, status; /healthz,
/readyz and /metrics are left out: probes would drown the rest), and every
asyncpg statement a child span, exported in batches over OTLP/HTTP to the
endpoint the standard variables name (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; default ``http://localhost:4318``). The
OpenTelemetry packages are an optional extra (``pip install 'tally[otel]'``):
nothing of them is imported, or costs anything, while traces are off.

Each app has its own tracer provider, passed to the instrumentation rather than
made global, and flushed and shut down with the app's lifespan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from tally.config import Settings

EXCLUDED_URLS = "healthz,readyz,metrics"
Shutdown = Callable[[], None]


class TracingUnavailable(RuntimeError):
    """Traces are asked for but the OpenTelemetry packages are not installed."""


def instrument(app: Starlette, settings: Settings) -> Shutdown:
    """Trace ``app`` when the settings say so; returns what flushes the spans left
    and undoes the instrumentation (a no-op when traces are off)."""
    if not settings.otel_traces:
        return lambda: None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "TALLY_OTEL_TRACES=true needs the OpenTelemetry packages: pip install 'tally[otel]'"
        ) from exc
    resource = Resource.create({"service.name": settings.otel_service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    app.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=provider, excluded_urls=EXCLUDED_URLS
    )
    uninstrument = _trace_asyncpg(provider)

    def shutdown() -> None:
        uninstrument()
        provider.shutdown()  # exports what is still queued, bounded by its timeout

    return shutdown


def _trace_asyncpg(provider: Any) -> Shutdown:
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    except ImportError:  # the extra without it: HTTP spans only
        return lambda: None
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        return lambda: None  # another app in this process did it already
    instrumentor.instrument(tracer_provider=provider)

    def uninstrument() -> None:
        instrumentor.uninstrument()

    return uninstrument
