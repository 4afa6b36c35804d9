"""The in-process bus's bookkeeping in PostgreSQL: which events each consumer group has
handled (`consumer_done`) and the dead letters (`dead_letters`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from server.eventlog import event_from_row
from server.events import Event
from server.personal_data import Erasure
from server.storage import Storage


class MemoryBusStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def db(self) -> asyncpg.Pool:
        return self.storage.db

    async def mark_done(self, consumer: str, event_id: str) -> None:
        await self.mark_done_many(consumer, [event_id])

    async def done_among(self, consumer: str, event_ids: list[str]) -> set[str]:
        """Which of `event_ids` this consumer group has already handled."""
        rows = await self.db.fetch(
            "SELECT event_id FROM consumer_done WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            consumer,
            event_ids,
        )
        return {str(r["event_id"]) for r in rows}

    async def mark_done_many(self, consumer: str, event_ids: list[str]) -> None:
        """Record `event_ids` as handled by this consumer group, in one statement."""
        if event_ids:
            await self.db.execute(
                "INSERT INTO consumer_done (consumer, event_id)"
                " SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
                consumer,
                event_ids,
            )

    async def undone_events(self, consumer: str, since_hours: int = 24) -> list[Event]:
        rows = await self.db.fetch(
            "SELECT e.* FROM events e WHERE e.ts > now() - make_interval(hours => $2)"
            " AND NOT EXISTS (SELECT 1 FROM consumer_done d"
            "   WHERE d.consumer = $1 AND d.event_id = e.id)"
            " AND NOT EXISTS (SELECT 1 FROM dead_letters x"
            "   WHERE x.consumer = $1 AND x.event_id = e.id)"
            " ORDER BY e.ts, e.logged_at",
            consumer,
            since_hours,
        )
        return [event_from_row(r) for r in rows]

    async def add_dead_letter(self, consumer: str, event: Event, error: str, attempts: int) -> None:
        await self.db.execute(
            "INSERT INTO dead_letters (consumer, event_id, envelope, error, attempts)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (consumer, event_id)"
            " DO UPDATE SET error = EXCLUDED.error, attempts = EXCLUDED.attempts,"
            " failed_at = now()",
            consumer,
            event.id,
            event.wire(),
            error[:2000],
            attempts,
        )

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, consumer, event_id, envelope, error, attempts, failed_at"
            " FROM dead_letters ORDER BY id LIMIT $1",
            limit,
        )
        return [
            {
                "id": str(r["id"]),
                "consumer": r["consumer"],
                "event": r["envelope"],
                "error": r["error"],
                "attempts": r["attempts"],
                "failed_at": r["failed_at"].isoformat(),
            }
            for r in rows
        ]

    async def take_dead_letters(self, ids: list[str] | None) -> list[tuple[str, Event]]:
        """Delete dead letters (all, or these ids) and return (consumer, event) to redeliver."""
        if ids is None:
            rows = await self.db.fetch("DELETE FROM dead_letters RETURNING consumer, envelope")
        else:
            rows = await self.db.fetch(
                "DELETE FROM dead_letters WHERE id = ANY($1::bigint[])"
                " RETURNING consumer, envelope",
                [int(i) for i in ids if i.isdigit()],
            )
        return [(r["consumer"], Event(**r["envelope"])) for r in rows]

    async def erase_user(self, e: Erasure) -> None:
        """Dead letters: payload strings that name the user become the pseudonym."""
        await e.execute(
            "dead_letters",
            "UPDATE dead_letters SET envelope = privacy_erase_json(envelope, $1, $2)"
            " WHERE envelope IS DISTINCT FROM privacy_erase_json(envelope, $1, $2)",
            e.user_id,
            e.pseudonym,
        )

    async def count_dead_letters(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM dead_letters"))
