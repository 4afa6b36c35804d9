"""SQL of the HOURS ledger: accounts (`user:<id>`, `system:mint`), transfers (one per grant or
tip, unique by idempotency key) and their two ledger entries, which always sum to zero. A
balance never goes below zero: the CHECK of `hours_accounts` refuses an overdraft (the system
mint excepted), so a transfer that would overdraw fails in the caller's transaction."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

from server.personal_data import Erasure
from server.storage import Store

Conn: TypeAlias = Any  # an asyncpg Connection in the caller's transaction, or the pool


class LedgerStore(Store):
    async def transfer_by_key(self, conn: Conn, idem_key: str) -> asyncpg.Record | None:
        return await conn.fetchrow("SELECT * FROM hours_transfers WHERE idem_key = $1", idem_key)

    async def move(
        self,
        conn: asyncpg.Connection,
        kind: str,
        from_account: str,
        to_account: str,
        amount: Decimal,
        idem_key: str,
        actor_id: str,
        conversation_id: str | None = None,
        message_id: str | None = None,
    ) -> asyncpg.Record:
        """Debit and credit in the caller's transaction; the CHECK refuses an overdraft."""
        await conn.execute(
            "INSERT INTO hours_accounts (account) VALUES ($1), ($2) ON CONFLICT DO NOTHING",
            from_account,
            to_account,
        )
        transfer_id = str(uuid.uuid4())
        row = await conn.fetchrow(
            "INSERT INTO hours_transfers (id, kind, from_account, to_account, amount, idem_key,"
            " conversation_id, message_id, actor_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " RETURNING *",
            transfer_id,
            kind,
            from_account,
            to_account,
            amount,
            idem_key,
            conversation_id,
            message_id,
            actor_id,
        )
        await conn.execute(
            "UPDATE hours_accounts SET balance = balance - $2 WHERE account = $1",
            from_account,
            amount,
        )
        await conn.execute(
            "UPDATE hours_accounts SET balance = balance + $2 WHERE account = $1",
            to_account,
            amount,
        )
        await conn.executemany(
            "INSERT INTO ledger_entries (transfer_id, account, amount) VALUES ($1, $2, $3)",
            [(transfer_id, from_account, -amount), (transfer_id, to_account, amount)],
        )
        assert row is not None
        return row

    async def balance(self, conn: Conn, account: str) -> Decimal:
        value = await conn.fetchval(
            "SELECT balance FROM hours_accounts WHERE account = $1", account
        )
        return Decimal(value or 0)

    async def ledger_sum(self) -> Decimal:
        return Decimal(
            await self.db.fetchval("SELECT COALESCE(sum(amount), 0) FROM ledger_entries")
        )

    # -- a user's data (export and erasure; see server/personal_data.py) -------------------

    async def history(self, account: str, user_id: str) -> tuple[list[Any], list[Any]]:
        """The transfers an account or user took part in, and the account's ledger entries."""
        transfers = await self.db.fetch(
            "SELECT * FROM hours_transfers WHERE from_account = $1 OR to_account = $1"
            " OR actor_id = $2 ORDER BY created_at",
            account,
            user_id,
        )
        entries = await self.db.fetch(
            "SELECT id, transfer_id, amount, created_at FROM ledger_entries WHERE account = $1"
            " ORDER BY id",
            account,
        )
        return list(transfers), list(entries)

    async def erase_user(self, e: Erasure) -> None:
        """The HOURS account is renamed to the pseudonym's; entries are renamed, never deleted
        (they still sum to zero), transfers anonymized."""
        conn, uid, ps = e.conn, e.user_id, e.pseudonym
        old, new = f"user:{uid}", f"user:{ps}"
        moved = await e.execute(
            "hours_accounts",
            "INSERT INTO hours_accounts (account, balance)"
            " SELECT $2, balance FROM hours_accounts WHERE account = $1"
            " ON CONFLICT (account) DO UPDATE"
            " SET balance = hours_accounts.balance + EXCLUDED.balance",
            old,
            new,
        )
        if moved:
            await conn.execute("DELETE FROM hours_accounts WHERE account = $1", old)
        await e.execute(
            "ledger_entries", "UPDATE ledger_entries SET account = $2 WHERE account = $1", old, new
        )
        await e.execute(
            "hours_transfers",
            "UPDATE hours_transfers"
            " SET from_account = privacy_erase_ident(from_account, $1, $2),"
            " to_account = privacy_erase_ident(to_account, $1, $2),"
            " actor_id = privacy_erase_ident(actor_id, $1, $2),"
            # tips: "tip:<sender>:<conversation>:<client id>" (the tip's idempotency key)
            " idem_key = CASE WHEN starts_with(idem_key, 'tip:' || $1 || ':')"
            "   THEN 'tip:' || $2 || substr(idem_key, length($1) + 5) ELSE idem_key END"
            " WHERE from_account = 'user:' || $1 OR to_account = 'user:' || $1"
            " OR actor_id = $1 OR starts_with(idem_key, 'tip:' || $1 || ':')",
            uid,
            ps,
        )
