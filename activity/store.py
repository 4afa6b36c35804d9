"""SQL for activity streams: opt-ins, entries (kept until `expires_at`), similarity counts.

Every time is passed in from the feature's clock, never taken from the database's now(), so a
test can move the clock past the 24 hours."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from server.personal_data import Erasure
from server.storage import Store


class ActivityStore(Store):
    # -- consent ----------------------------------------------------------------------------

    async def opt_in(self, user_id: str, now: datetime) -> None:
        await self.storage.db.execute(
            "INSERT INTO activity_optins (user_id, opted_in_at) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO NOTHING",
            user_id,
            now,
        )

    async def opt_out(self, user_id: str) -> int:
        """Withdraw consent: the opt-in row and every entry go; return how many entries."""
        async with self.transaction() as conn:
            return await self._remove(conn, user_id)

    async def optin_row(self, user_id: str) -> asyncpg.Record | None:
        return await self.storage.db.fetchrow(
            "SELECT * FROM activity_optins WHERE user_id = $1", user_id
        )

    # -- a share: one transaction locks the opt-in, counts, inserts, schedules the notify job -

    async def lock_user(self, conn: asyncpg.Connection, user_id: str) -> bool:
        """Lock the user's opt-in row for this transaction; False when not opted in."""
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM activity_optins WHERE user_id = $1 FOR UPDATE", user_id
            )
        )

    async def live_count(
        self, conn: asyncpg.Connection, user_id: str, now: datetime
    ) -> tuple[int, datetime | None]:
        """How many unexpired entries the user has, and when the oldest of them expires."""
        row = await conn.fetchrow(
            "SELECT count(*) AS n, min(expires_at) AS oldest FROM activity_entries"
            " WHERE user_id = $1 AND expires_at > $2",
            user_id,
            now,
        )
        return int(row["n"]), row["oldest"]

    async def insert_entry(
        self,
        conn: asyncpg.Connection,
        user_id: str,
        kind: str,
        text: str,
        key: str,
        now: datetime,
        expires_at: datetime,
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            "INSERT INTO activity_entries (id, user_id, kind, text, hash, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            uuid.uuid4(),
            user_id,
            kind,
            text,
            key,
            now,
            expires_at,
        )
        assert row is not None
        return row

    async def others_sharing(
        self, key: str, user_id: str, now: datetime, conn: asyncpg.Connection | None = None
    ) -> int:
        """Distinct other users with an unexpired entry of this similarity key (inside the
        caller's transaction when `conn` is given)."""
        return int(
            await (conn or self.storage.db).fetchval(
                "SELECT count(DISTINCT user_id) FROM activity_entries"
                " WHERE hash = $1 AND expires_at > $2 AND user_id <> $3",
                key,
                now,
                user_id,
            )
        )

    # -- entries ----------------------------------------------------------------------------

    async def entry(self, entry_id: str) -> asyncpg.Record | None:
        return await self.storage.db.fetchrow(
            "SELECT * FROM activity_entries WHERE id = $1", entry_id
        )

    async def match_recipients(
        self, key: str, user_id: str, now: datetime, limit: int
    ) -> list[asyncpg.Record]:
        """Other opted-in users sharing this key, most recent first, each with their own newest
        entry's text (what their notification quotes)."""
        return list(
            await self.storage.db.fetch(
                "SELECT * FROM (SELECT DISTINCT ON (e.user_id) e.user_id, e.text, e.created_at"
                "  FROM activity_entries e JOIN activity_optins o ON o.user_id = e.user_id"
                "  WHERE e.hash = $1 AND e.expires_at > $2 AND e.user_id <> $3"
                "  ORDER BY e.user_id, e.created_at DESC) r ORDER BY created_at DESC LIMIT $4",
                key,
                now,
                user_id,
                limit,
            )
        )

    async def entries_of(self, user_id: str, now: datetime | None) -> list[asyncpg.Record]:
        """The user's entries, newest first (only unexpired ones when `now` is given)."""
        return list(
            await self.storage.db.fetch(
                "SELECT * FROM activity_entries WHERE user_id = $1"
                " AND ($2::timestamptz IS NULL OR expires_at > $2) ORDER BY created_at DESC",
                user_id,
                now,
            )
        )

    async def delete_entry(self, user_id: str, entry_id: str) -> bool:
        status = await self.storage.db.execute(
            "DELETE FROM activity_entries WHERE id = $1 AND user_id = $2", entry_id, user_id
        )
        return bool(status.endswith(" 1"))

    # -- retention --------------------------------------------------------------------------

    async def purge(self, now: datetime, batch: int = 5000) -> int:
        """Delete expired entries (in batches, so a large backlog never holds long locks)."""
        total = 0
        async with self.storage.db.acquire() as conn:
            while True:
                status = await conn.execute(
                    "DELETE FROM activity_entries WHERE id IN (SELECT id FROM activity_entries"
                    " WHERE expires_at <= $1 LIMIT $2)",
                    now,
                    batch,
                )
                n = int(status.split()[-1])
                total += n
                if n < batch:
                    return total

    async def drop_finished_jobs(self, kinds: list[str]) -> None:
        """Forget this feature's jobs that finished more than a day ago."""
        await self.storage.db.execute(
            "DELETE FROM jobs WHERE kind = ANY($1::text[]) AND state IN ('done', 'cancelled')"
            " AND finished_at < now() - interval '1 day'",
            kinds,
        )

    # -- a user's data ----------------------------------------------------------------------

    async def erase_user(self, e: Erasure) -> None:
        """The opt-in and every entry."""
        e.add("activity_entries", await self._remove(e.conn, e.user_id))

    async def _remove(self, conn: asyncpg.Connection, user_id: str) -> int:
        """The opt-in row and every entry (in the caller's transaction); how many entries."""
        await conn.execute("DELETE FROM activity_optins WHERE user_id = $1", user_id)
        status = await conn.execute("DELETE FROM activity_entries WHERE user_id = $1", user_id)
        return int(status.split()[-1])
