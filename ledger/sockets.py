"""The ledger's socket event on /messages: `hours:balance`, the user's own HOURS balance and
tier (the namespace, namespaces/messages.py, carries it beside messaging's events)."""

from __future__ import annotations

from typing import Any

from ledger.service import Ledger
from server.auth import Principal
from server.sockets import handles


class LedgerHandlers:
    """Mixin of /messages: `ledger` is handed in by the namespace."""

    ledger: Ledger

    @handles("hours:balance")
    async def hours_balance(self, sid: str, p: Principal, _: Any) -> Any:
        return await self.ledger.balance(p.user_id)
