"""The HOURS ledger: balances and tiers, admin grants (audited), and the transfer under a tip,
which runs inside the tipping conversation's transaction (messaging hands its connection in).

Accounts are `user:<id>` and the system mint (`system:mint`, where grants come from); every
transfer is idempotent on its key: a retry under the same key moves nothing twice."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from ledger.store import LedgerStore
from server.audit import AuditLog
from server.errors import ApiError, Code

MINT = "system:mint"
#: the lowest balance of each tier, highest first (below the last one: "starter")
TIERS = ((Decimal(1000), "gold"), (Decimal(100), "silver"), (Decimal(10), "bronze"))


def account(user_id: str) -> str:
    return f"user:{user_id}"


def tier(balance: Decimal) -> str:
    for floor, name in TIERS:
        if balance >= floor:
            return name
    return "starter"


class Ledger:
    def __init__(self, store: LedgerStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    async def balance(self, user_id: str) -> dict[str, Any]:
        """`hours:balance` and the bot's /hours: {"user_id", "balance", "tier"}."""
        bal = await self.store.balance(self.store.db, account(user_id))
        return {"user_id": user_id, "balance": float(bal), "tier": tier(bal)}

    async def grant(self, admin: str, user_id: str, amount: Decimal, key: str) -> Decimal:
        """Mint `amount` to the user once per `key` (audited); the user's balance after."""
        async with self.store.transaction() as conn:
            if await self.store.transfer_by_key(conn, key) is None:
                await self.store.move(conn, "grant", MINT, account(user_id), amount, key, admin)
                await self.audit.record(
                    admin,
                    "hours.grant",
                    f"user:{user_id}",
                    None,
                    {"amount": str(amount)},
                    conn=conn,
                )
            return await self.store.balance(conn, account(user_id))

    # -- tips (messaging/tips.py, through its `TipLedger`) ------------------------------------

    async def tipped(self, conn: asyncpg.Connection, key: str) -> str | None:
        """The message of the tip already made under `key`, if there is one."""
        done = await self.store.transfer_by_key(conn, key)
        return str(done["message_id"]) if done is not None else None

    async def tip(
        self,
        conn: asyncpg.Connection,
        key: str,
        sender: str,
        recipient: str,
        amount: Decimal,
        conversation_id: str,
        message_id: str,
    ) -> Decimal:
        """Move `amount` from sender to recipient in the caller's transaction; `conflict` when
        the sender's balance is short (nothing moved). The sender's balance after."""
        try:
            async with conn.transaction():  # savepoint: the overdraft CHECK may fire
                await self.store.move(
                    conn,
                    "tip",
                    account(sender),
                    account(recipient),
                    amount,
                    key,
                    sender,
                    conversation_id,
                    message_id,
                )
        except asyncpg.CheckViolationError:
            raise ApiError(Code.CONFLICT, "insufficient HOURS balance") from None
        return await self.store.balance(conn, account(sender))

    async def balance_of(self, conn: asyncpg.Connection, user_id: str) -> Decimal:
        return await self.store.balance(conn, account(user_id))
