"""SQL for activity streams: opt-ins, entries (kept until `expires_at`), similarity counts.

Every time is passed in from the feature's clock, never taken from the database's now(), so a
test can move the clock past the 24 hours."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = Any  # an asyncpg Connection (in a transaction) or the Pool


async def opted_in(conn: Conn, user_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM activity_optins WHERE user_id = $1", user_id))


async def opt_in(conn: Conn, user_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO activity_optins (user_id, opted_in_at) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO NOTHING",
        user_id,
        now,
    )


async def opt_out(conn: Conn, user_id: str) -> int:
    """Withdraw consent: the opt-in row and every entry go; return how many entries."""
    await conn.execute("DELETE FROM activity_optins WHERE user_id = $1", user_id)
    return await delete_entries_of(conn, user_id)


async def delete_entries_of(conn: Conn, user_id: str) -> int:
    status = await conn.execute("DELETE FROM activity_entries WHERE user_id = $1", user_id)
    return int(status.split()[-1])


async def lock_user(conn: Conn, user_id: str) -> bool:
    """Lock the user's opt-in row for this transaction; False when not opted in."""
    return bool(
        await conn.fetchval("SELECT 1 FROM activity_optins WHERE user_id = $1 FOR UPDATE", user_id)
    )


async def live_count(conn: Conn, user_id: str, now: datetime) -> tuple[int, datetime | None]:
    """How many unexpired entries the user has, and when the oldest of them expires."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(expires_at) AS oldest FROM activity_entries"
        " WHERE user_id = $1 AND expires_at > $2",
        user_id,
        now,
    )
    return int(row["n"]), row["oldest"]


async def insert_entry(
    conn: Conn,
    user_id: str,
    kind: str,
    text: str,
    key: str,
    now: datetime,
    expires_at: datetime,
) -> asyncpg.Record:
    return await conn.fetchrow(
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


async def others_sharing(conn: Conn, key: str, user_id: str, now: datetime) -> int:
    """Distinct other users with an unexpired entry of this similarity key."""
    return int(
        await conn.fetchval(
            "SELECT count(DISTINCT user_id) FROM activity_entries"
            " WHERE hash = $1 AND expires_at > $2 AND user_id <> $3",
            key,
            now,
            user_id,
        )
    )


async def entry(conn: Conn, entry_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM activity_entries WHERE id = $1", entry_id)


async def match_recipients(
    conn: Conn, key: str, user_id: str, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Other opted-in users sharing this key, most recent first, each with their own newest
    entry's text (what their notification quotes)."""
    return list(
        await conn.fetch(
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


async def entries_of(conn: Conn, user_id: str, now: datetime | None) -> list[asyncpg.Record]:
    """The user's entries, newest first (only unexpired ones when `now` is given)."""
    return list(
        await conn.fetch(
            "SELECT * FROM activity_entries WHERE user_id = $1"
            " AND ($2::timestamptz IS NULL OR expires_at > $2) ORDER BY created_at DESC",
            user_id,
            now,
        )
    )


async def delete_entry(conn: Conn, user_id: str, entry_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM activity_entries WHERE id = $1 AND user_id = $2", entry_id, user_id
    )
    return bool(status.endswith(" 1"))


async def purge(conn: Conn, now: datetime, batch: int = 5000) -> int:
    """Delete expired entries (in batches, so a large backlog never holds long locks)."""
    total = 0
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


async def optin_row(conn: Conn, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM activity_optins WHERE user_id = $1", user_id)
