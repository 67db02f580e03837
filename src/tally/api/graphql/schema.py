"""The schema: the query and mutation roots, built once per app from its settings."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from tally.api.graphql.mutations import Mutation
from tally.api.graphql.queries import Query
from tally.api.graphql.scalars import SCALARS
from tally.api.graphql.subscriptions import Subscription
from tally.config import Settings
from tally.errors import TallyError

log = logging.getLogger(__name__)


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # A refusal (a TallyError) or an invalid document is the client's business;
        # only an error nothing expected is a bug worth a stack trace in the log.
        for error in errors:
            original = error.original_error
            if original is not None and not isinstance(original, TallyError | GraphQLError):
                log.error("unhandled error in GraphQL", exc_info=original)


def build_schema(settings: Settings | None = None) -> Schema:
    extensions: list[Any] = []
    if settings is not None:
        tokens_max = settings.graphql_tokens_max
        extensions.append(lambda: MaxTokensLimiter(max_token_count=tokens_max))
        if not settings.graphql_introspection:
            extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
    )


def schema_text() -> str:
    """The schema in SDL, as docs/schema.graphql holds it."""
    return build_schema().as_str() + "\n"
