"""What every resolver of one GraphQL request is given: the caller, the services,
the request's idempotency claim, and the request's dataloaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from strawberry.dataloader import DataLoader

from tally.api.endpoint import require_scope
from tally.core import Account, Transfer
from tally.identity import Principal
from tally.ledger.idempotency import Claim
from tally.services import Services
from tally.storage.records import BalanceRecord
from tally.support.cursors import Page


@dataclass(slots=True)
class Loaders:
    """One request's batched reads: every ``load`` made while resolving one level
    of the query becomes one statement (strawberry's DataLoader gathers them)."""

    services: Services
    tenant_id: str
    accounts: DataLoader[str, Account | None] = field(init=False)
    _last_transfers: dict[int, DataLoader[str, list[Transfer]]] = field(default_factory=dict)
    _balances: dict[int, DataLoader[tuple[str, Account], Page[BalanceRecord]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.accounts = DataLoader(self._load_accounts)

    async def _load_accounts(self, ids: list[str]) -> list[Account | None]:
        found = await self.services.ledger.get_accounts(self.tenant_id, list(dict.fromkeys(ids)))
        return [found.get(i) for i in ids]

    def last_transfers(self, limit: int) -> DataLoader[str, list[Transfer]]:
        loader = self._last_transfers.get(limit)
        if loader is None:

            async def load(ids: list[str]) -> list[list[Transfer]]:
                ledger = self.services.ledger
                found = await ledger.last_transfers(self.tenant_id, list(dict.fromkeys(ids)), limit)
                return [found[i] for i in ids]

            loader = self._last_transfers[limit] = DataLoader(load)
        return loader

    def balances(self, limit: int) -> DataLoader[tuple[str, Account], Page[BalanceRecord]]:
        """The first page (newest first) of each account's balance history."""
        loader = self._balances.get(limit)
        if loader is None:

            async def load(keys: list[tuple[str, Account]]) -> list[Page[BalanceRecord]]:
                ids = list(dict.fromkeys(k[0] for k in keys))
                pages = await self.services.ledger.first_balances(self.tenant_id, ids, limit)
                return [pages[k[0]] for k in keys]

            loader = self._balances[limit] = DataLoader(load, cache_key_fn=lambda k: k[0])
        return loader


@dataclass(slots=True)
class Context:
    services: Services
    principal: Principal
    request_id: str | None
    client_address: str | None
    claim: Claim | None
    loaders: Loaders
    # Set when a mutation answered with a stored response (Idempotent-Replayed).
    replayed: bool = False

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    def require(self, scope: str) -> None:
        require_scope(self.principal, scope)
