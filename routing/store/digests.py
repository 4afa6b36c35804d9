"""Digest bookkeeping: the durable digest jobs (scheduler `jobs` of kind `routing.digest`, one
per user and due time), when each user's last digest went (`digest_runs`), and what a digest
lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from routing.store.inbox import NOTIFICATION_COLUMNS, item
from server.storage import Store

DIGEST_JOB = "routing.digest"


class DigestStore(Store):
    async def ensure_jobs(
        self, conn: asyncpg.Connection, jobs: list[tuple[str, datetime, dict[str, Any]]]
    ) -> None:
        """Bulk form of `Scheduler.schedule(DIGEST_JOB, key, run_at, payload)` (same row, same
        idempotent key) so a fan-out to thousands costs one round trip."""
        if jobs:
            await conn.executemany(
                "INSERT INTO jobs (kind, key, run_at, payload) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (key) DO NOTHING",
                [(DIGEST_JOB, key, run_at, payload) for key, run_at, payload in jobs],
            )

    async def last_sent(self, user_id: str) -> datetime | None:
        value = await self.storage.db.fetchval(
            "SELECT last_sent_at FROM digest_runs WHERE user_id = $1", user_id
        )
        return value if isinstance(value, datetime) else None

    async def record(self, user_id: str, mode: str, at: datetime) -> None:
        await self.storage.db.execute(
            "INSERT INTO digest_runs (user_id, mode, last_sent_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET mode = $2, last_sent_at = $3",
            user_id,
            mode,
            at,
        )

    async def items(
        self, user_id: str, since: datetime, until: datetime, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The newest `limit` notifications updated in (since, until], and how many there are."""
        rows = await self.storage.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS}, count(*) OVER () AS total FROM notifications"
            " WHERE user_id = $1 AND NOT hidden AND updated_at > $2 AND updated_at <= $3"
            " ORDER BY updated_at DESC LIMIT $4",
            user_id,
            since,
            until,
            limit,
        )
        return [item(r) for r in rows], (int(rows[0]["total"]) if rows else 0)
