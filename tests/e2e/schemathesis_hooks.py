"""schemathesis hooks for tests/e2e/test_schemathesis.py (loaded via SCHEMATHESIS_HOOKS).

One check replaces schemathesis's ``positive_data_acceptance`` (ST202): a request
the OpenAPI document calls valid must not be refused, except for a reason that
no JSON Schema can state, each one named below with its operation, status and
problem ``code``. The built-in check can only be loosened by status, and allowing
422 for a whole operation would also let through the bug this check exists for:
a ``validation_error`` on a body the document accepts. This one allows a refusal
only when the answer's code says it was one of these reasons:

- a ledger rule that depends on data the request does not carry: the accounts
  it names exist, are open, share a currency, hold the money; a pending transfer
  is still pending and holds enough (``exceeds_credits``, ``currency_mismatch``,
  ``pending_transfer_*``, ...). Also ``accounts_must_be_different``: JSON Schema
  cannot compare two fields of one object;
- ``idempotency_key_reused``: the key was used before for another request.
  schemathesis draws keys from a small space and reuses them across bodies;
  whether a key is fresh is state, not shape;
- PATCH metadata that, merged with the keys the account already has, would pass
  50 keys (422 ``validation_error`` on ``metadata``, ``invalid_length``): the
  document bounds the patch, only the server knows the account;
- a ``cursor`` that this server did not issue (422 ``validation_error`` naming
  only ``cursor``): cursors are opaque, so the document describes them as strings;
- 412 ``precondition_failed`` for an ``If-Match`` that is well formed but not the
  account's current version: only the server knows the version (RFC 9110 §13.1.1).
  Also a 412 replayed (``Idempotent-Replayed: true``) for a request whose key
  and body an earlier one used with a stale ``If-Match``: the fingerprint is
  method, path and body (api.md §3), so the stored refusal is the answer;
- a password the policy refuses (422 ``validation_error`` on ``password`` or
  ``new_password`` with ``too_common``, ``too_short`` or ``too_long``): the
  document states 12 to 128 characters, but not the 30,000 common passwords, and
  the length counts after Unicode NFC normalisation, which can shorten a string;
- a webhook endpoint URL that is well formed but refused as a destination (422
  ``url_not_allowed``): whether its host resolves, and to a public address, is
  DNS, not shape (docs/webhooks.md);
- a whole number written as a float (``"amount": 4241.0``), refused as
  ``invalid_type`` with the message ``field_errors.WHOLE_NUMBERS``: api.md §2 says
  amounts are JSON integers, never floats, and Tally reads the number as written.
  JSON Schema 2020-12 counts 4241.0 as an ``integer``, so no schema can say this;
  the descriptions in the document do.

A hook drops one kind of negative-data failure (ST201), and only after checking
the request the server really got: a metadata filter (``metadata[key]=value``,
a deepObject) that schemathesis made invalid by giving it a value of another
type (null, a number) reaches the server as a string (``metadata[k]=``), which
is valid, so the server rightly answers 200. The failure is dropped only when it
names the ``metadata`` parameter alone and every ``metadata[...]`` pair in the
URL as sent meets the document's rules for it.

Everything else that the built-in check flags is still flagged: any other 4xx
(400, 405, 413, 415, 422 ``validation_error``, ...) to schema-valid input fails.
docs/reliability.md records the reasoning.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import schemathesis
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

from tally.api.field_errors import WHOLE_NUMBERS

# As the built-in check: these answers are allowed for valid data anyway (no such
# object, no such permission, busy, down; a 5xx is not_a_server_error's business).
ANSWERS_VALID_DATA_MAY_GET = {401, 403, 404, 409, 429}

PASSWORD_RULES = {"too_common", "too_short", "too_long"}
TRANSFER_RULES = {
    "accounts_must_be_different",
    "debit_account_not_found",
    "credit_account_not_found",
    "accounts_must_have_the_same_currency",
    "currency_mismatch",
    "debit_account_closed",
    "credit_account_closed",
    "exceeds_credits",
    "exceeds_debits",
    "overflows_debits",
    "overflows_credits",
}
PENDING_RULES = {*TRANSFER_RULES, "exceeds_pending_transfer_amount"}
# operationId -> 422 codes that follow from data, not from the request's shape.
LEDGER_REFUSALS: dict[str, set[str]] = {
    "createTransfer": TRANSFER_RULES,
    "createTransferBatch": {"batch_failed"},
    "postTransfer": PENDING_RULES,
    "voidTransfer": PENDING_RULES,
}
WEBHOOK_URL_OPERATIONS = {"createWebhookEndpoint", "updateWebhookEndpoint"}
# Codes a batch item may carry inside an atomic batch's 422 ``batch_failed``.
BATCH_ITEM_REFUSALS = {
    *PENDING_RULES,
    # Refuses the request on POST /v1/transfers (and the document says so there);
    # in a batch it is one item's ledger outcome, so batch items may carry it.
    "timeout_requires_pending",
    "linked_event_failed",
    "pending_transfer_not_found",
    "pending_transfer_not_pending",
    "pending_transfer_already_posted",
    "pending_transfer_already_voided",
    "pending_transfer_expired",
}


def _header(case: Any, name: str) -> str | None:
    for key, value in (case.headers or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _is_whole_float(body: Any, error: dict[str, Any]) -> bool:
    """Whether the error is "not a float" for a body field that holds a whole float."""
    if error.get("code") != "invalid_type" or error.get("message") != WHOLE_NUMBERS:
        return False
    value = body
    for part in re.findall(r"[^.\[\]]+", str(error.get("field"))):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False
    return isinstance(value, float) and value.is_integer()


def _why_refused(case: Any, status: int, problem: dict[str, Any], replayed: bool) -> str | None:
    """The reason a schema-valid request may be refused this way, or None."""
    code = problem.get("code")
    operation_id = case.operation.definition.raw.get("operationId", "")
    if status == 422 and code == "idempotency_key_reused" and _header(case, "Idempotency-Key"):
        return "the Idempotency-Key was used before for another request"
    if status == 412 and code == "precondition_failed" and operation_id == "updateAccount":
        if_match = _header(case, "If-Match")
        if if_match is not None and if_match.strip() != "*":
            return "If-Match names a version the account does not have now"
        if replayed:
            return "the stored 412 of an earlier request with this key and body"
    if status == 422 and code == "url_not_allowed" and operation_id in WEBHOOK_URL_OPERATIONS:
        return "where the URL's host resolves: DNS, not shape"
    errors = problem.get("errors") or []
    if status == 422 and code == "validation_error" and errors:
        named = {(e.get("field"), e.get("code")) for e in errors}
        if named == {("cursor", "invalid")} and (case.query or {}).get("cursor"):
            return "the cursor is not one this server issued"
        password_fields = {"password", "new_password"}
        if named and all(f in password_fields and c in PASSWORD_RULES for f, c in named):
            return "the password policy: a common password, or its length after NFC"
        if named == {("metadata", "invalid_length")} and operation_id == "updateAccount":
            return "merged with the account's metadata, the patch would pass 50 keys"
        if all(_is_whole_float(case.body, e) for e in errors):
            return "a whole number written as a float"
    if status == 422 and code in LEDGER_REFUSALS.get(operation_id, set()):
        if code != "batch_failed":
            return f"a ledger rule: {code}"
        items = {r["error"]["code"] for r in problem.get("results") or [] if r.get("error")}
        if items and items <= BATCH_ITEM_REFUSALS:
            return f"a ledger rule in an atomic batch: {sorted(items)}"
    return None


@schemathesis.check
def positive_data_refused_only_for_state(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schema-valid input is accepted, or refused only for a reason no schema can state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if is_unexpected_http_status_case(case):
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ANSWERS_VALID_DATA_MAY_GET:
        return None
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        raise AssertionError(f"Schema-valid request refused with {status} and no problem body")
    replayed = response.headers.get("idempotent-replayed") in ("true", ["true"])
    if _why_refused(case, status, problem, replayed) is None:
        raise AssertionError(
            f"Schema-valid request refused: {status} {problem.get('code')}: {problem.get('detail')}"
        )
    return None


# The document's metadata filter (routes.py): at most 10 pairs, keys 1-64 and
# values 0-512 characters, no NUL.
METADATA_FILTERS_MAX, METADATA_KEY_CHARS_MAX, METADATA_VALUE_CHARS_MAX = 10, 64, 512


def _metadata_sent_is_valid(url: str) -> bool:
    pairs = [
        (key[len("metadata[") : -1], value)
        for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if key.startswith("metadata[") and key.endswith("]")
    ]
    return len(pairs) <= METADATA_FILTERS_MAX and all(
        1 <= len(k) <= METADATA_KEY_CHARS_MAX
        and len(v) <= METADATA_VALUE_CHARS_MAX
        and "\x00" not in k + v
        for k, v in pairs
    )


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a metadata filter whose invalid value became valid
    on its way into the URL (see the module's docstring)."""
    if getattr(failure, "code", None) != "ST201":
        return True
    names_only_metadata = "parameter `metadata` in query" in str(failure.message)
    url = str(getattr(response.request, "url", ""))
    return not (names_only_metadata and _metadata_sent_is_valid(url))


# A long poll may wait up to 30 s (api.md §8), beyond this run's request timeout,
# and hundreds of them would each hold a case for their whole wait: a valid wait is
# made 0, which keeps the query valid (tests/e2e/test_events.py proves the waits).
@schemathesis.hook
def map_query(ctx: Any, query: Any) -> Any:
    if not isinstance(query, dict) or ctx.operation is None:
        return query
    wait = query.get("wait_seconds")
    if isinstance(wait, int) and not isinstance(wait, bool) and 0 < wait <= 30:
        query["wait_seconds"] = 0
    return query
