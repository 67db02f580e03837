"""GraphQL errors in the contract's terms: every error carries ``extensions.code``.

A ``TallyError`` (a refusal by a rule, the ledger, authentication or a limit)
keeps its code and detail, and the extras REST sends beside them (the fields
at fault, ``fields`` of an existing object, a failed atomic batch's
``results``, ``retryAfterSeconds``). An invalid document is
``validation_error`` (``malformed_request`` when it does not parse). Anything
else is a bug: ``internal_error``, with no text of the exception.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

from tally.api.endpoint import UNEXPECTED
from tally.api.problems import STATUS
from tally.errors import TallyError, ValidationFailed


def tally_error_json(error: TallyError) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": error.code}
    errors = error.errors if isinstance(error, ValidationFailed) else getattr(error, "errors", [])
    if errors:
        extensions["errors"] = [
            {"field": e.field, "code": e.code, "message": e.message} for e in errors
        ]
    if error.fields:
        extensions["fields"] = list(error.fields)
    results = getattr(error, "results", None)
    if results is not None:
        extensions["results"] = results
    if error.retry_after_seconds is not None:
        extensions["retryAfterSeconds"] = error.retry_after_seconds
    message = error.detail or STATUS.get(error.code, (500, error.code))[1]
    return {"message": message, "extensions": extensions}


def error_json(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    if isinstance(original, TallyError):
        out = tally_error_json(original)
    elif original is None or isinstance(original, GraphQLError) or error.path is None:
        # An invalid document or variable: no resolver ran for it.
        message, code = error.message, "validation_error"
        if isinstance(error, GraphQLSyntaxError):
            reason = message.removeprefix("Syntax Error: ")
            message, code = f"The query is not valid GraphQL: {reason}", "malformed_request"
        out = {"message": message, "extensions": {"code": code, **(error.extensions or {})}}
    else:
        out = {"message": UNEXPECTED, "extensions": {"code": "internal_error"}}
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        out["path"] = list(error.path)
    return out


def result_json(data: dict[str, Any] | None, errors: list[GraphQLError] | None) -> dict[str, Any]:
    """An operation's result as sent: over HTTP, and as a subscription's ``next``."""
    out: dict[str, Any] = {}
    if errors:
        out["errors"] = [error_json(e) for e in errors]
    # data is null once execution started (an error has a path), absent when the
    # document was refused before it (GraphQL spec §7.1.2).
    if data is not None or not errors or any(e.path for e in errors):
        out["data"] = data
    return out
