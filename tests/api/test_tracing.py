"""OpenTelemetry traces (TALLY_OTEL_TRACES): spans reach a real OTLP/HTTP receiver.

The receiver is a plain HTTP server on a loopback port that decodes what the SDK's
exporter sends (the OTLP protobuf), as a collector would: the test proves the
wire, not only that spans were made.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.testclient import TestClient

from tally.api import create_app
from tally.api.tracing import TracingUnavailable
from tally.config import Settings
from tests.conftest import FakeClock, create_tenant


class Receiver(ThreadingHTTPServer):
    spans: list[tuple[str, dict[str, object], str]]  # (name, attributes, service)


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.server.spans.append((span.name, attributes, resource["service.name"]))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_requests_and_statements_are_exported_as_spans_over_otlp(
    receiver: Receiver, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    _, key = create_tenant(database_url, "traced")
    settings = Settings(database_url=database_url, otel_traces=True, otel_service_name="ledger")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings, clock=FakeClock())) as client:
        r = client.post("/v1/accounts", json={"currency": "USD"}, headers=headers)
        assert r.status_code == 201, r.text
        assert client.get("/healthz").status_code == 200
    # The lifespan's end flushed the batch to the receiver.
    servers = [(n, a) for n, a, _ in receiver.spans if "http.route" in a or "POST" in n]
    assert any(a.get("http.status_code") == 201 or a.get("http.response.status_code") == 201
               for _, a in servers), receiver.spans  # fmt: skip
    assert {service for _, _, service in receiver.spans} == {"ledger"}
    assert not [n for n, _, _ in receiver.spans if "healthz" in n]  # probes are left out
    if database_url.startswith("postgresql"):
        assert any(a.get("db.system") == "postgresql" for _, a, _ in receiver.spans)


def test_traces_are_off_by_default_and_cost_no_middleware(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url), clock=FakeClock())
    assert not [m for m in app.user_middleware if "OpenTelemetry" in repr(m.cls)]


def test_asking_for_traces_without_the_extra_says_what_to_install(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if `tally[otel]` were not installed: the import fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(TracingUnavailable, match=r"tally\[otel\]"):
        create_app(Settings(database_url=database_url, otel_traces=True), clock=FakeClock())
