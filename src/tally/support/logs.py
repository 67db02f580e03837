"""Structured logs (``TALLY_LOG_FORMAT=json``): one JSON object per line, with the
request id of the request being served, for log pipelines (Loki, Elasticsearch,
Cloud Logging) that index fields rather than parse text.

The request id lives in a context variable that ``ApiMiddleware`` sets for the
life of each request, so any line logged while serving it (an unexpected error's
traceback, a database warning) carries it, not only the access line. A record's
``fields`` (``log.info(..., extra={"fields": {...}})``) become top-level keys.
With traces on, a line logged inside a span also carries its ``trace_id`` and
``span_id``, so logs and traces join.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("tally_request_id", default=None)
# Keys a record's fields may not take: the envelope's own.
_RESERVED = frozenset(
    {"time", "level", "logger", "pid", "message", "request_id", "trace_id", "span_id", "exception"}
)


class JsonFormatter(logging.Formatter):
    """``{"time": "2026-12-05T07:30:00.123Z", "level": "info", "logger": ..., "pid":
    ..., "message": ..., "request_id": ..., ...fields, "exception": ...}``"""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        _add_trace(entry)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _RESERVED and value is not None:
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def _add_trace(entry: dict[str, Any]) -> None:
    """The current span's ids, so a line joins its trace (TALLY_OTEL_TRACES). Only
    when OpenTelemetry is already loaded: logging never imports it."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        entry["trace_id"] = format(context.trace_id, "032x")
        entry["span_id"] = format(context.span_id, "016x")


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
