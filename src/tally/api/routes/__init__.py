"""The routes of the REST API, one module per area; ``ROUTES`` lists them all in
the order the OpenAPI document does."""

from tally.api.endpoint import RouteSpec
from tally.api.routes import (
    accounts,
    api_keys,
    audit,
    events,
    identity,
    members,
    transfers,
    webhooks,
)

LEDGER_ROUTES: tuple[RouteSpec, ...] = (
    *accounts.routes.specs,
    *transfers.routes.specs,
    *events.routes.specs,
)
IDENTITY_ROUTES: tuple[RouteSpec, ...] = (
    *identity.routes.specs,
    *members.routes.specs,
    *api_keys.routes.specs,
    *audit.routes.specs,
)
WEBHOOK_ROUTES: tuple[RouteSpec, ...] = tuple(webhooks.routes.specs)
ROUTES = (*LEDGER_ROUTES, *IDENTITY_ROUTES, *WEBHOOK_ROUTES)

__all__ = ["IDENTITY_ROUTES", "LEDGER_ROUTES", "ROUTES", "WEBHOOK_ROUTES", "RouteSpec"]
