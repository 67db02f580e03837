"""Structured logs (support/logs.py): one JSON object a line, with the request id."""

from __future__ import annotations

import json
import logging
import logging.config
import sys

from tally.cli.server import log_config
from tally.support.logs import REQUEST_ID, JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("tally.test", logging.WARNING, __file__, 1, message, args, None)
    r.__dict__.update(extra)
    return r


def test_a_record_is_one_line_of_json_with_its_envelope() -> None:
    line = JsonFormatter().format(record("queue at %d%%", 90))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "queue at 90%"
    assert entry["level"] == "warning"
    assert entry["logger"] == "tally.test"
    assert entry["time"].endswith("Z")
    assert "request_id" not in entry


def test_a_line_logged_while_serving_a_request_names_it() -> None:
    token = REQUEST_ID.set("req_abc")
    try:
        entry = json.loads(JsonFormatter().format(record("hello")))
    finally:
        REQUEST_ID.reset(token)
    assert entry["request_id"] == "req_abc"


def test_fields_become_keys_but_never_overwrite_the_envelope() -> None:
    fields = {"status": 201, "route": "/v1/transfers", "message": "forged", "tenant": None}
    entry = json.loads(JsonFormatter().format(record("x", fields=fields)))
    assert entry["status"] == 201
    assert entry["route"] == "/v1/transfers"
    assert entry["message"] == "x"
    assert "tenant" not in entry


def test_a_traceback_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        r = record("failed")
        r.exc_info = sys.exc_info()
    line = JsonFormatter().format(r)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_the_server_log_config_picks_the_format() -> None:
    assert "format" in log_config("info")["formatters"]["default"]
    json_config = log_config("info", "json")["formatters"]["default"]
    assert json_config == {"()": "tally.support.logs.JsonFormatter"}
    logging.config.dictConfig(log_config("info", "json"))  # it loads
    logging.config.dictConfig(log_config("info"))


def test_a_line_logged_inside_a_span_carries_its_trace_and_span_ids() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        entry = json.loads(JsonFormatter().format(record("inside")))
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record("outside")))
