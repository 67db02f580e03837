"""msgspec's validation errors, in words a client can act on.

msgspec says ``Expected `str` matching regex '^[A-Z][A-Z0-9_]{0,15}(?![\\s\\S])' - at
`$.currency```: accurate, but a regular expression and Python's type names are not
what a client of a JSON API should have to read. ``field_error`` keeps the field
path and the ``code`` (stable: ``unknown_field``, ``required``, ``invalid_type``,
``out_of_range``, ``invalid_length``, ``invalid``) and writes the message in the
API's terms: JSON kinds, bounds, each pattern's rule in words
(``schemas.common.PATTERN_WORDS``), the values an enum takes, and for an unknown
field the fields the object does take.
"""

from __future__ import annotations

import difflib
import functools
import re

from msgspec import inspect as mi

from tally.api.schemas.common import PATTERN_WORDS
from tally.errors import FieldError

_AT_PATH = re.compile(
    r"^(?P<message>.*?)(?: - at `(?P<path>[^`]*)`(?: in `(?P<container>[^`]*)`)?)?$", re.DOTALL
)
_QUOTED = re.compile(r"`([^`]*)`")
_BOUND = re.compile(r"^Expected `(?P<kind>[^`]+)`(?: of length)? (?P<op><=|>=) (?P<n>-?\d+)$")
_TYPES = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")
_REGEX = re.compile(r"^Expected `str` matching regex (?P<regex>.*)$", re.DOTALL)
_PATH_PART = re.compile(r"[^.\[\]]+|\[[^\]]*\]")
_INT64_MAX = 2**63 - 1
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "null": "null",
    "object": "an object",
    "array": "an array",
}
_UNITS = {"str": "character", "array": "item", "object": "key"}
# A JSON number with a fraction or an exponent where an integer is due: the one
# mistake with money that deserves its own sentence (docs/api.md: never floats).
WHOLE_NUMBERS = (
    "Must be an integer written without a fraction or an exponent (4241, not 4241.0, "
    "42.41 or 4.241e3): money is an integer in minor units."
)


def field_error(message: str, prefix: str = "", schema: type | None = None) -> FieldError:
    """Turn msgspec's ``Expected `int`, got `float` - at `$.amount``` into a FieldError."""
    match = _AT_PATH.match(message)
    assert match is not None
    text = match.group("message")
    path = (match.group("path") or "$").removeprefix("$").removeprefix(".")
    in_key = match.group("container") is not None
    if in_key:
        # "... - at `key` in `$.metadata`": the fault is in a key of that object.
        path = match.group("container").removeprefix("$").removeprefix(".")
    code, name = _code(text)
    words = _words(text, schema, path)
    if name:
        path = f"{path}.{name}" if path else name
    if in_key:
        words = f"A key {words[0].lower()}{words[1:]}"
    elif path.endswith("[...]"):
        words = f"A value {words[0].lower()}{words[1:]}"
    field = f"{prefix}{'.' if prefix and path and not path.startswith('[') else ''}{path}"
    return FieldError(field or prefix or "body", code, words)


def _code(text: str) -> tuple[str, str]:
    """The stable code of msgspec's message, and the field it names (if it names one)."""
    lowered = text.lower()
    quoted = _QUOTED.findall(text)
    if lowered.startswith("object contains unknown field"):
        return "unknown_field", quoted[0] if quoted else ""
    if lowered.startswith("object missing required field"):
        return "required", quoted[0] if quoted else ""
    if lowered.startswith("expected") and ("<=" in text or ">=" in text):
        return "out_of_range", ""
    if lowered.startswith("expected `") and ", got `" in text:
        return "invalid_type", ""
    if "length" in lowered:
        return "invalid_length", ""
    return "invalid", ""


def _words(text: str, schema: type | None, path: str) -> str:
    quoted = _QUOTED.findall(text)
    if text.startswith("Object contains unknown field"):
        return _unknown_field(quoted[0] if quoted else "", _type_at(schema, path))
    if text.startswith("Object missing required field"):
        return f"{quoted[0] if quoted else 'A field'} is required."
    if (found := _BOUND.match(text)) is not None:
        return _bound(found.group("kind"), found.group("op"), int(found.group("n")), text)
    if (found := _TYPES.match(text)) is not None:
        return _types(found.group("expected"), found.group("got"))
    if (found := _REGEX.match(text)) is not None:
        return _pattern(found.group("regex"))
    if text.startswith("Invalid enum value"):
        return _enum(_type_at(schema, path))
    if text == "Number out of range":
        return "Must be a number this field can hold; this one is far too large."
    return "Must be a value this field takes; see its rules in the API reference (/docs)."


def _bound(kind: str, op: str, n: int, text: str) -> str:
    at = "at most" if op == "<=" else "at least"
    if "of length" in text:
        unit = _UNITS.get(kind, "item")
        return f"Must be {at} {n} {unit}{'' if n == 1 else 's'}."
    return f"Must be {at} {n}{' (2^63-1)' if n == _INT64_MAX else ''}."


def _types(expected: str, got: str) -> str:
    wanted = [e.strip() for e in expected.split("|")]
    if got == "float" and "int" in wanted:
        return WHOLE_NUMBERS
    kinds = " or ".join(_KINDS.get(w, w) for w in wanted)
    return f"Must be {kinds}, not {_KINDS.get(got, got)}."


def _pattern(quoted_regex: str) -> str:
    for regex, words in PATTERN_WORDS.items():
        if quoted_regex == repr(regex):
            return words
    # Not reached while every request pattern has its words (a test holds that).
    return "Must have the form this field takes; see its rules in the API reference (/docs)."


def _enum(found: mi.Type | None) -> str:
    if isinstance(found, mi.LiteralType):
        return f"Must be one of {', '.join(str(v) for v in found.values)}."
    return "Must be one of the values this field takes; see the API reference (/docs)."


def _unknown_field(name: str, found: mi.Type | None) -> str:
    if not isinstance(found, mi.StructType):
        return f"{name} is not a field here; remove it."
    fields = [f.encode_name for f in found.fields]
    words = f"{name} is not a field here; remove it (the fields are {', '.join(fields)})."
    close = difflib.get_close_matches(name, fields, n=1) if len(name) <= 64 else []
    return f"{words} Did you mean {close[0]}?" if close else words


def _type_at(schema: type | None, path: str) -> mi.Type | None:
    """The type msgspec decodes at ``path`` (``flags``, ``transfers[0]``) in ``schema``."""
    if schema is None:
        return None
    found: mi.Type | None = _unwrap(_info(schema))
    for part in _PATH_PART.findall(path):
        if part.startswith("["):
            if isinstance(found, mi.ListType):
                found = found.item_type
            elif isinstance(found, mi.DictType):
                found = found.value_type
            else:
                return None
        elif isinstance(found, mi.StructType):
            fields = {f.encode_name: f.type for f in found.fields}
            found = fields.get(part)
        else:
            return None
        found = _unwrap(found)
    return found


@functools.lru_cache(maxsize=64)
def _info(schema: type) -> mi.Type:
    return mi.type_info(schema)


def _unwrap(found: mi.Type | None) -> mi.Type | None:
    """A field's own type, without its constraints wrapper or its ``| None``."""
    while True:
        if isinstance(found, mi.Metadata):
            found = found.type
        elif isinstance(found, mi.UnionType):
            real = [t for t in found.types if not isinstance(t, mi.NoneType)]
            if len(real) != 1:
                return found
            found = real[0]
        else:
            return found
