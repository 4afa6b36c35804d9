"""The ledger's socket event on /messages: `hours:balance`, the user's own HOURS balance and
tier (the namespace, namespaces/messages.py, carries it beside messaging's events)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ledger.service import Ledger
from server.auth import Principal
from server.contract import Outgoing
from server.sockets import NoPayload, handles


class Balance(Outgoing):
    """The ack of `hours:balance` (`Ledger.balance`)."""

    user_id: str
    balance: float = Field(description="your HOURS balance")
    tier: Literal["starter", "bronze", "silver", "gold"] = Field(
        description="by balance: bronze from 10, silver from 100, gold from 1000"
    )


class LedgerHandlers:
    """Mixin of /messages: `ledger` is handed in by the namespace."""

    ledger: Ledger

    @handles("hours:balance", ack=Balance)
    async def hours_balance(self, sid: str, p: Principal, _: NoPayload) -> Any:
        """Your HOURS balance and tier."""
        return await self.ledger.balance(p.user_id)
