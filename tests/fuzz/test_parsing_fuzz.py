"""Fuzzing the request decoding itself: bodies, headers, paths and query strings.

Hypothesis throws arbitrary bytes, arbitrary JSON, JSON shaped like each request
schema with hostile values, and mutations of valid bodies at the functions that
read a request (``tally.api.parsing``, the msgspec schemas of ``tally.schemas``,
the batch-item check, cursors, idempotency keys, ``If-Match``, path ids), with no
server and no database, thousands of inputs a second. Each must either return a
value that satisfies the contract (api.md §2, checked here with regexes and
bounds of the test's own, not the schema's) or raise the one error of the
contract it stands for: anything else becomes a 500 in production.

tests/integration/test_api_bad_input.py holds the hand-picked hostile cases;
tests/fuzz/test_http_fuzz.py sends random whole requests to the app.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from tally.api.parsing import (
    decode,
    expected_version,
    idempotency_key,
    metadata_filters,
    query_choice,
    query_int,
    query_text,
    query_time,
    read_body,
)
from tally.api.problems import status_of
from tally.api.routes.transfers import batch_command
from tally.api.schemas.ledger import (
    AccountCreate,
    AccountUpdate,
    BatchCreate,
    PendingPost,
    PendingVoid,
    TransferCreate,
)
from tally.core import CreateTransfer, PostPending, VoidPending
from tally.errors import (
    IdempotencyKeyInvalid,
    MalformedRequest,
    PayloadTooLarge,
    PreconditionFailed,
    TallyError,
    UnsupportedMediaType,
    ValidationFailed,
)
from tally.ledger.idempotency import fingerprint
from tally.support.cursors import decode_cursor, encode_cursor
from tally.support.ids import is_valid_id
from tests.fuzz.strategies import (
    AMOUNT_MAX,
    VALID_BODIES,
    hostile_text,
    json_leaves,
    json_values,
    shaped,
)
from tests.soak import scaled

TIMEOUT_SECONDS_MAX = 31_536_000
BODY_BYTES_MAX = 1024
# The contract's rules, written out again rather than imported from the schemas.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
CURRENCY = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
FIELD_ERROR_CODES = {
    "unknown_field",
    "required",
    "out_of_range",
    "invalid_type",
    "invalid_length",
    "invalid",
}
SCHEMAS: tuple[type[Any], ...] = (
    AccountCreate,
    AccountUpdate,
    TransferCreate,
    PendingPost,
    PendingVoid,
    BatchCreate,
)

FUZZ = settings(
    max_examples=scaled(300, 10_000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


T = TypeVar("T")


def attempt(fn: Callable[[], T]) -> T | TallyError:
    """The value, or the contract error it raised. Any other exception escapes and
    fails the test: in the app it would be a 500."""
    try:
        return fn()
    except TallyError as error:
        return error


# -- inputs ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, schema: type[Any]) -> bytes:
    """A valid body with a few bytes deleted, replaced or inserted."""
    data = bytearray(json.dumps(VALID_BODIES[schema]).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "replace", "insert"]))
        byte = draw(st.binary(min_size=1, max_size=3))
        if kind == "delete":
            del data[at : at + len(byte)]
        elif kind == "replace":
            data[at : at + len(byte)] = byte
        else:
            data[at:at] = byte
    return bytes(data)


def bodies(schema: type[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        shaped(schema).map(lambda v: json.dumps(v).encode()),
        shaped(schema).map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "replace")),
        mutated(schema),
    )


# -- what an accepted value must satisfy ------------------------------------------------


def assert_id(value: object) -> None:
    assert isinstance(value, str) and ID.fullmatch(value), repr(value)


def assert_optional_id(value: object) -> None:
    if value is not None:
        assert_id(value)


def assert_amount(value: object) -> None:
    assert type(value) is int and 1 <= value <= AMOUNT_MAX, repr(value)


def assert_metadata(value: object, *, nulls: bool = False) -> None:
    assert isinstance(value, dict) and len(value) <= 50, repr(value)
    for k, v in value.items():
        assert isinstance(k, str) and 1 <= len(k) <= 64 and "\x00" not in k, repr(k)
        if v is None and nulls:
            continue
        assert isinstance(v, str) and len(v) <= 512 and "\x00" not in v, repr(v)


def assert_transfer(t: TransferCreate) -> None:
    assert_id(t.debit_account_id)
    assert_id(t.credit_account_id)
    assert_amount(t.amount)
    assert_optional_id(t.id)
    assert t.currency is None or CURRENCY.fullmatch(t.currency), repr(t.currency)
    assert type(t.pending) is bool
    assert t.timeout_seconds is None or 1 <= t.timeout_seconds <= TIMEOUT_SECONDS_MAX
    assert_metadata(t.metadata)


def assert_batch_item(item: CreateTransfer | PostPending | VoidPending) -> None:
    """A batch item becomes the core's command; every limit still holds on it."""
    assert_id(item.id)
    if isinstance(item, CreateTransfer):
        assert_transfer(item)
        return
    assert_id(item.pending_id)
    if isinstance(item, PostPending):
        assert item.amount is None or 1 <= item.amount <= AMOUNT_MAX
    assert_metadata(item.metadata)


def assert_accepted(value: Any) -> None:
    """The contract's limits hold for whatever the schema let through."""
    if isinstance(value, AccountCreate):
        assert CURRENCY.fullmatch(value.currency), repr(value.currency)
        assert_optional_id(value.id)
        assert value.normal_balance in ("credit", "debit")
        assert type(value.flags.debits_must_not_exceed_credits) is bool
        assert type(value.flags.credits_must_not_exceed_debits) is bool
        assert_metadata(value.metadata)
    elif isinstance(value, AccountUpdate):
        assert value.status in (None, "closed")
        if value.metadata is not None:
            assert_metadata(value.metadata, nulls=True)
    elif isinstance(value, TransferCreate):
        assert_transfer(value)
    elif isinstance(value, PendingPost | PendingVoid):
        assert_optional_id(value.id)
        assert_metadata(value.metadata)
        if isinstance(value, PendingPost) and value.amount is not None:
            assert_amount(value.amount)
    else:
        assert isinstance(value, BatchCreate)
        assert 1 <= len(value.transfers) <= 1000 and type(value.atomic) is bool
        for index, raw in enumerate(value.transfers):
            item = attempt(lambda raw=raw, index=index: batch_command(raw, index))
            if isinstance(item, TallyError):
                assert_field_errors(item, prefix=f"transfers[{index}].")
            else:
                assert_batch_item(item)


INTERNALS = re.compile(r"`|regex|\(\?!|\$\.|\b(?:str|int|float|bool|dict|NoneType|Struct)\b")


def assert_field_errors(refused: TallyError, prefix: str = "") -> None:
    assert isinstance(refused, ValidationFailed), refused
    assert refused.code == "validation_error" and status_of(refused) == 422
    assert refused.errors
    for e in refused.errors:
        assert e.code in FIELD_ERROR_CODES, e
        assert e.field and e.field.startswith(prefix) and e.message, e
        # Words for people: no regular expression, no Python type or path syntax
        # (an unknown field's message starts with the client's own name for it).
        ours = e.message.split(" is not a field here", 1)[-1]
        assert not INTERNALS.search(ours), e


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_any_body_decodes_to_a_valid_request_or_to_a_400_or_422(schema: type[Any]) -> None:
    @FUZZ
    @given(body=bodies(schema))
    @example(body=b"")
    @example(body=json.dumps(VALID_BODIES[schema]).encode())
    def check(body: bytes) -> None:
        value = attempt(lambda: decode(body, schema))
        if isinstance(value, MalformedRequest):
            assert (status_of(value), value.code) == (400, "malformed_request")
            return
        if isinstance(value, TallyError):
            assert_field_errors(value)
            return
        assert isinstance(value, schema)
        assert_accepted(value)
        # What decodes has a fingerprint, the same however the JSON is laid out.
        same = fingerprint("POST", "/p", body)
        relaid = json.dumps(msgspec.json.decode(body), sort_keys=True, indent=2).encode()
        assert fingerprint("POST", "/p", relaid) == same

    check()


@st.composite
def requests_with_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], list[bytes]]:
    """An HTTP scope with arbitrary Content-Length and Content-Type headers, and a
    body arriving in chunks."""
    body = draw(st.binary(max_size=2 * BODY_BYTES_MAX) | bodies(TransferCreate))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    headers: list[tuple[bytes, bytes]] = []
    length = draw(
        st.one_of(
            st.none(),
            st.just(str(len(body)).encode()),
            st.integers(-5, 3 * BODY_BYTES_MAX).map(lambda n: str(n).encode()),
            st.sampled_from([b"", b" 12", b"1 2", b"0x10", b"9" * 500, b"\xb2", b"\xb9\xb2"]),
            st.binary(max_size=8),
        )
    )
    if length is not None:
        headers.append((b"content-length", length))
    content_type = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    b"application/json",
                    b"application/JSON; charset=utf-8",
                    b"application/merge-patch+json",
                    b"application/json\x00",
                    b"text/plain",
                    b"application/jsonx",
                    b"\xff\xfe",
                ]
            ),
            st.binary(max_size=30),
        )
    )
    if content_type is not None:
        headers.append((b"content-type", content_type))
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    return scope, chunks


@FUZZ
@given(request=requests_with_bodies(), empty_ok=st.booleans())
@example(request=({"type": "http", "headers": [(b"content-length", b"\xb2")]}, []), empty_ok=True)
def test_reading_a_body_returns_it_or_refuses_it_with_400_413_or_415(
    request: tuple[dict[str, Any], list[bytes]], empty_ok: bool
) -> None:
    scope, chunks = request
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def read() -> bytes:
        return await read_body(Request(scope, receive), BODY_BYTES_MAX, empty_ok=empty_ok)

    body = attempt(lambda: asyncio.run(read()))
    if isinstance(body, TallyError):
        assert type(body) in (MalformedRequest, PayloadTooLarge, UnsupportedMediaType), body
        assert (status_of(body), body.code) in {
            (400, "malformed_request"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
        }
        return
    assert len(body) <= BODY_BYTES_MAX
    assert body == b"".join(chunks) or (empty_ok and body == b"{}" and not b"".join(chunks))


# -- headers and path ids -----------------------------------------------------------------


def latin1(data: bytes) -> str:
    """A header value as Starlette hands it over: the bytes, read as Latin-1."""
    return data.decode("latin-1")


latin1_text = st.text(alphabet=st.characters(max_codepoint=255), max_size=4)
header_values = st.one_of(
    st.binary(max_size=40).map(latin1),
    # Shaped like an entity tag: quoted, sometimes weak, any Latin-1 inside.
    st.tuples(st.sampled_from(["", "W/"]), latin1_text).map(lambda p: f'{p[0]}"{p[1]}"'),
    hostile_text,
    st.sampled_from(['"1"', '"²"', 'W/"3"', '"-1"', '""', '"' + "9" * 40 + '"', "*", " * "]),
)


@FUZZ
@given(value=header_values)
@example(value='"²"')
@example(value='W/"\u0661"')
def test_if_match_names_a_version_or_is_a_412(value: str) -> None:
    scope = {"type": "http", "headers": [(b"if-match", value.encode("latin-1", "replace"))]}
    version = attempt(lambda: expected_version(Request(scope)))
    if isinstance(version, TallyError):
        assert type(version) is PreconditionFailed and status_of(version) == 412, version
        return
    assert version is None or 0 <= version < 10**19


@FUZZ
@given(values=st.lists(header_values, max_size=3))
def test_an_idempotency_key_is_printable_ascii_or_a_400(values: list[str]) -> None:
    key = attempt(lambda: idempotency_key(values))
    if isinstance(key, TallyError):
        assert type(key) is IdempotencyKeyInvalid and status_of(key) == 400, key
        return
    if key is None:
        assert values == []
    else:
        assert 1 <= len(key) <= 255 and all(" " <= ch <= "~" for ch in key)


@FUZZ
@given(value=hostile_text | st.text(alphabet="Aa0._:-", max_size=70))
def test_a_path_id_is_valid_exactly_when_the_contract_says(value: str) -> None:
    assert is_valid_id(value) == (ID.fullmatch(value) is not None)


# -- query strings --------------------------------------------------------------------------

QUERY_NAMES = [
    "limit",
    "cursor",
    "after",
    "at",
    "currency",
    "status",
    "order",
    "account_id",
    "created_after",
    "created_before",
    "metadata[k]",
    "metadata[]",
    "metadata[a.b]",
]


def url_quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="[]")


query_strings = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.tuples(st.sampled_from(QUERY_NAMES) | hostile_text, hostile_text | json_leaves.map(str)),
        max_size=12,
    ).map(lambda pairs: "&".join(f"{url_quote(k)}={url_quote(v)}" for k, v in pairs).encode()),
)


QUERY_PARSERS: list[tuple[str, Callable[[Request], object]]] = [
    ("limit", lambda r: query_int(r, "limit", 100, 1, 1000)),
    ("after", lambda r: query_int(r, "after", 0, 0, 2**62)),
    ("status", lambda r: query_choice(r, "status", ("open", "closed"))),
    ("at", lambda r: query_time(r, "at")),
    ("created_after", lambda r: query_time(r, "created_after")),
    ("account_id", lambda r: query_text(r, "account_id")),
    ("cursor", lambda r: query_text(r, "cursor", 128)),
    ("metadata", metadata_filters),
]


@FUZZ
@given(query=query_strings)
@example(query=b"limit=%C2%B2&after=%D9%A1&at=0001-01-01T00:00:00%2B14:00")
@example(query=b"created_after=9999-12-31T23:59:59-14:00&cursor=%00")
def test_every_query_parser_returns_a_clean_value_or_a_422(query: bytes) -> None:
    request = Request({"type": "http", "query_string": query, "headers": []})
    for name, parse in QUERY_PARSERS:
        value = attempt(lambda parse=parse: parse(request))
        if isinstance(value, TallyError):
            assert_field_errors(value)
            continue
        if name in ("limit", "after"):
            assert type(value) is int and value >= 0, (name, value)
        if name in ("account_id", "cursor") and value is not None:
            assert isinstance(value, str) and "\x00" not in value, (name, value)


@FUZZ
@given(cursor=hostile_text | st.binary(max_size=40).map(latin1))
def test_a_cursor_is_one_the_server_issued_or_a_422(cursor: str) -> None:
    position = attempt(lambda: decode_cursor(cursor))
    if isinstance(position, TallyError):
        assert_field_errors(position)
        return
    assert 0 <= position <= AMOUNT_MAX


@FUZZ
@given(position=st.integers(0, AMOUNT_MAX))
def test_a_cursor_the_server_issued_reads_back(position: int) -> None:
    assert decode_cursor(encode_cursor(position)) == position
