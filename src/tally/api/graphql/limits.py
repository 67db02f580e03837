"""The limits every GraphQL request is held to before it runs (docs/graphql.md).

GraphQL lets one request ask for a great deal: nested lists of lists, the same
field under many aliases, several operations at once. REST bounds a request by
its route and page size; here the document itself is measured, from its syntax
tree and variables, before a resolver runs:

- size: at most ``graphql_tokens_max`` tokens (the parser stops there);
- one operation per document, and no JSON array of requests (batching);
- a mutation has one root field, so that an ``Idempotency-Key`` names one
  effect, as in REST (several transfers at once: ``createTransferBatch``);
- depth: at most ``graphql_depth_max`` nested selections;
- aliases: at most ``graphql_aliases_max``;
- cost: each object field costs 1, and a field that returns a page costs its
  page size (``first``, or the default) times what it selects; at most
  ``graphql_cost_max``.

Introspection fields (``__schema``, ``__type``) are left out of depth and cost:
the schema is finite and public (docs/schema.graphql).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, parse
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)

# Fields whose selections repeat per item: the lists with a fixed default size,
# and the connections (their default is the page size of REST's lists).
_PAGED_DEFAULTS = {"lastTransfers": 10}
_CONNECTIONS = frozenset({"accounts", "transfers", "events", "balanceHistory"})
_LEAVES = frozenset({"edges", "nodes", "node", "pageInfo"})
# Fragments spread many times over multiply the walk; this bounds it before
# validation has run (the cost limit refuses such a document anyway).
_SPREADS_MAX = 1_000


class LimitExceeded(GraphQLError):
    """A request over one of the limits: refused before it runs."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, extensions={"code": "validation_error", "limit": limit})


@dataclass(frozen=True, slots=True)
class Limits:
    depth_max: int
    cost_max: int
    aliases_max: int
    page_default: int
    page_max: int


def operation_of(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    """The one operation of the document, or the refusal of a batch."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        raise LimitExceeded(
            "operations",
            f"A request carries exactly one operation; this one has {len(operations)}. "
            "Batched operations are refused: send one per request.",
        )
    (operation,) = operations
    if operation_name is not None and (
        operation.name is None or operation.name.value != operation_name
    ):
        raise GraphQLError(f"Unknown operation named {operation_name[:80]!r}.")
    return operation


def checked_operation(
    query: str,
    operation_name: str | None,
    variables: dict[str, Any],
    limits: Limits,
    tokens_max: int,
) -> OperationDefinitionNode:
    """The request's one operation, parsed and within every limit; or the
    ``GraphQLError`` that refuses it (a syntax error, a limit). Over HTTP and over
    WebSocket alike."""
    try:
        document = parse(query, max_tokens=tokens_max)
        operation = operation_of(document, operation_name)
        check(document, operation, variables, limits)
    except RecursionError:  # fragments nested thousands deep (a raised token limit)
        raise LimitExceeded("depth", "The query's fragments are nested too deeply.") from None
    return operation


def check(
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
    limits: Limits,
) -> None:
    """Raise ``LimitExceeded`` for the first limit the operation breaks."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    walk = _Walk(fragments, variables, limits)
    if operation.operation is OperationType.MUTATION:
        roots = walk.fields(operation.selection_set)
        if len(roots) != 1:
            raise LimitExceeded(
                "mutations",
                f"A mutation request has exactly one root field; this one has {len(roots)}. "
                "Send several transfers with createTransferBatch, or one request each.",
            )
    cost = walk.cost(operation.selection_set, 1)
    if walk.aliases > limits.aliases_max:
        raise LimitExceeded(
            "aliases",
            f"The query uses {walk.aliases} aliases; at most {limits.aliases_max} "
            "(TALLY_GRAPHQL_ALIASES_MAX).",
        )
    if walk.depth_seen > limits.depth_max:
        raise LimitExceeded(
            "depth",
            f"The query is nested {walk.depth_seen} levels deep; at most {limits.depth_max} "
            "(TALLY_GRAPHQL_DEPTH_MAX).",
        )
    if cost > limits.cost_max:
        raise LimitExceeded(
            "cost",
            f"The query could read about {cost} objects; at most {limits.cost_max} "
            "(TALLY_GRAPHQL_COST_MAX). Ask for smaller pages (first) or fewer nested lists.",
        )


class _Walk:
    def __init__(
        self,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        limits: Limits,
    ) -> None:
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.aliases = 0
        self.depth_seen = 0
        self.spreads = 0

    def fields(
        self, selection_set: SelectionSetNode | None, within: frozenset[str] = frozenset()
    ) -> list[FieldNode]:
        """The fields of a selection set, fragments inlined. A fragment spread
        inside itself (refused by validation, which runs later) is not followed."""
        found: list[FieldNode] = []
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, FieldNode):
                found.append(node)
            elif isinstance(node, InlineFragmentNode):
                found.extend(self.fields(node.selection_set, within))
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                self.spreads += 1
                fragment = self.fragments.get(name)
                if fragment is None or name in within or self.spreads > _SPREADS_MAX:
                    continue  # validation names the unknown fragment or the cycle
                found.extend(self.fields(fragment.selection_set, within | {name}))
        return found

    def cost(self, selection_set: SelectionSetNode | None, depth: int) -> int:
        total = 0
        for field in self.fields(selection_set):
            if field.alias is not None:
                self.aliases += 1
            name = field.name.value
            if name.startswith("__") or field.selection_set is None:
                continue  # introspection, or a scalar: free
            self.depth_seen = max(self.depth_seen, depth)
            if depth > self.limits.depth_max:
                continue  # refused for depth anyway: stop walking
            inner = self.cost(field.selection_set, depth + 1)
            if name in _LEAVES:
                total += inner
            else:
                total += 1 + self._page(field) * inner
        return total

    def _page(self, field: FieldNode) -> int:
        """The page size a field asks for: 1 for a field that is not a list."""
        for argument in field.arguments or ():
            if argument.name.value == "first":
                value = argument.value
                if isinstance(value, VariableNode):
                    given = self.variables.get(value.name.value)
                    return _bounded(given, self.limits.page_max)
                if isinstance(value, IntValueNode):
                    return _bounded(value.value, self.limits.page_max)
        name = field.name.value
        if name in _PAGED_DEFAULTS:
            return _PAGED_DEFAULTS[name]
        return self.limits.page_default if name in _CONNECTIONS else 1


def _bounded(value: Any, page_max: int) -> int:
    """The page size given, as the resolver will read it; a value the resolver will
    refuse counts as the maximum (it never runs)."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return page_max
    return size if 1 <= size <= page_max else page_max
