"""Wires the HOURS ledger into the node: the service (balances, grants, the transfers under
tips) and its share of a user's data (the account with its transfers and entries)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.service import Ledger, account, tier
from ledger.store import LedgerStore
from server.feature import Feature
from server.personal_data import Erasure, records

if TYPE_CHECKING:
    from server.node import Node


class LedgerFeature(Feature):
    name = "ledger"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.store = LedgerStore(node.storage)
        self.service = Ledger(self.store, node.audit)

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """The HOURS account: balance, tier, the transfers it or the user took part in, and
        its ledger entries."""
        acct = account(user_id)
        balance = await self.store.balance(self.store.db, acct)
        transfers, entries = await self.store.history(acct, user_id)
        return {
            "hours": {
                "account": acct,
                "balance": str(balance),
                "tier": tier(balance),
                "transfers": records(transfers),
                "ledger_entries": records(entries),
            }
        }

    async def erase_user(self, erasure: Erasure) -> None:
        await self.store.erase_user(erasure)
