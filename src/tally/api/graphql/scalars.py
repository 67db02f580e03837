"""The scalars GraphQL lacks: 64-bit integers for money, and JSON objects.

GraphQL's ``Int`` is 32 bits, and an amount or a total runs to 2^63-1 minor
units (api.md §1), so money is ``Int64``: a JSON number, never a string or a
float, as in REST. ``Metadata`` is the flat string-to-string object of api.md
§2; what it may hold is checked by the same request Structs as REST's, so its
parser only insists on an object. ``JSONObject`` is output only: an event's
object as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NewType, TypeAlias

import strawberry
from graphql import GraphQLError
from graphql.language import (
    BooleanValueNode,
    IntValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _int64(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphQLError(
            'Int64 is a JSON integer (4241, not 4241.0 or "4241"): minor units, never a float.'
        )
    if not INT64_MIN <= value <= INT64_MAX:
        raise GraphQLError("Int64 must lie between -2^63 and 2^63-1.")
    return value


def _int64_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> int:
    if not isinstance(node, IntValueNode):
        raise GraphQLError("Int64 is written as an integer literal, such as 4241.")
    if len(node.value.lstrip("-")) > 19:  # int() of thousands of digits is slow
        raise GraphQLError("Int64 must lie between -2^63 and 2^63-1.")
    return _int64(int(node.value))


# The names the schema's types are written with; ``SCALARS`` says what each is to
# GraphQL (the schema's scalar_overrides), so the types stay plain to mypy.
# To mypy they are the plain types they hold.
if TYPE_CHECKING:
    Int64: TypeAlias = int
    Metadata: TypeAlias = dict[str, str]
    JSONObject: TypeAlias = dict[str, Any]
else:
    Int64 = NewType("Int64", int)
    Metadata = NewType("Metadata", dict)
    JSONObject = NewType("JSONObject", dict)

_INT64 = strawberry.scalar(
    name="Int64",
    description="A signed 64-bit integer, written as a JSON number: amounts and totals "
    "in minor units (cents), sequences and versions.",
    serialize=_int64,
    parse_value=_int64,
    parse_literal=_int64_literal,
)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GraphQLError("Metadata is a JSON object of string keys to string values.")
    return value


def _literal_value(node: ValueNode) -> Any:
    if isinstance(node, StringValueNode):
        return node.value
    if isinstance(node, BooleanValueNode):
        return node.value  # refused by the request's Struct, naming the key
    raise GraphQLError("Metadata values are strings.")


def _metadata_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    if not isinstance(node, ObjectValueNode):
        raise GraphQLError("Metadata is an object of string keys to string values.")
    return {f.name.value: _literal_value(f.value) for f in node.fields}


_METADATA = strawberry.scalar(
    name="Metadata",
    description="An object of at most 50 string keys (1-64 characters) to string values "
    "(at most 512 characters).",
    serialize=lambda value: value,
    parse_value=_object,
    parse_literal=_metadata_literal,
)


def _output_only(value: Any, variables: Any = None) -> Any:
    raise GraphQLError("JSONObject is returned by the server, never sent to it.")


_JSON_OBJECT = strawberry.scalar(
    name="JSONObject",
    description="A JSON object: an event's account or transfer as it was after the change.",
    serialize=lambda value: value,
    parse_value=_output_only,
    parse_literal=_output_only,
)

SCALARS: dict[object, Any] = {Int64: _INT64, Metadata: _METADATA, JSONObject: _JSON_OBJECT}
