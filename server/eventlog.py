"""The event log: every published event, durable in PostgreSQL (table `events`), whichever bus
carries it — the in-process bus appends on publish, with Redis the `eventlog` consumer group
does. Read by the bot's reports, the export, and the in-process bus's rescans."""

from __future__ import annotations

from typing import Any

import asyncpg

from server import jsonutil
from server.events import Event
from server.personal_data import Erasure
from server.storage import Storage


def event_from_row(row: asyncpg.Record) -> Event:
    return Event(
        id=str(row["id"]),
        type=row["type"],
        actor=row["actor"],
        subjects=list(row["subjects"]),
        payload=row["payload"],
        ts=row["ts"].isoformat(),
        audience=row["audience"],
    )


class EventLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def db(self) -> asyncpg.Pool:
        return self.storage.db

    async def append(self, event: Event) -> bool:
        """Insert into the event log; False when the id was already there (a retry)."""
        status = await self.db.execute(
            "INSERT INTO events (id, type, actor, subjects, payload, ts, audience)"
            " VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7)"
            " ON CONFLICT (id) DO NOTHING",
            event.id,
            event.type,
            event.actor,
            event.subjects,
            event.payload,
            event.ts,
            event.audience,
        )
        return bool(status.endswith(" 1"))

    async def append_many(self, events: list[Event]) -> set[str]:
        """Insert many in one statement; the ids that were new (not retries)."""
        if not events:
            return set()
        rows = await self.db.fetch(
            "INSERT INTO events (id, type, actor, subjects, payload, ts)"
            " SELECT x.id, x.type, x.actor,"
            " ARRAY(SELECT jsonb_array_elements_text(x.subjects::jsonb)), x.payload::jsonb,"
            " x.ts::timestamptz"
            " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[]) AS x(id, type, actor, subjects, payload, ts)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            [e.id for e in events],
            [e.type for e in events],
            [e.actor for e in events],
            [jsonutil.dumps(e.subjects) for e in events],
            [jsonutil.dumps(e.payload) for e in events],
            [e.ts for e in events],
        )
        return {str(r["id"]) for r in rows}

    async def get(self, event_id: str) -> Event | None:
        row = await self.db.fetchrow("SELECT * FROM events WHERE id = $1", event_id)
        return event_from_row(row) if row else None

    async def count(self, type_: str | None = None) -> int:
        if type_ is None:
            return int(await self.db.fetchval("SELECT count(*) FROM events"))
        return int(await self.db.fetchval("SELECT count(*) FROM events WHERE type = $1", type_))

    async def export_user(self, user_id: str, limit: int) -> list[Any]:
        """The newest `limit` events the user produced, newest first."""
        return list(
            await self.db.fetch(
                "SELECT id, type, subjects, payload, ts FROM events WHERE actor = $1"
                " ORDER BY ts DESC LIMIT $2",
                user_id,
                limit,
            )
        )

    async def erase_user(self, e: Erasure) -> None:
        """Actor, subjects and payload strings that name the user become the pseudonym."""
        await e.execute(
            "events",
            "UPDATE events SET actor = privacy_erase_ident(actor, $1, $2),"
            " subjects = privacy_erase_idents(subjects, $1, $2),"
            " payload = privacy_erase_json(payload, $1, $2)"
            " WHERE actor = $1 OR ('user:' || $1) = ANY(subjects)"
            " OR payload IS DISTINCT FROM privacy_erase_json(payload, $1, $2)",
            e.user_id,
            e.pseudonym,
        )
