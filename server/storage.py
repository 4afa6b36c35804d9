"""Storage: the asyncpg pool, versioned SQL migrations, and the event log's SQL.

The same code drives the embedded PostgreSQL (pgserver) and a production server
(`OURS_DATABASE_URL`): one dialect, one set of migrations.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import asyncpg

from config import Settings
from server import embedded_pg, jsonutil
from server.events import Event

log = logging.getLogger("ours.storage")

MIGRATION_LOCK = 7_420_001  # pg_advisory_lock key: one migrator at a time across processes


async def _init_conn(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=jsonutil.dumps, decoder=jsonutil.loads, schema="pg_catalog"
    )


async def _release_conn(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (UNLISTEN, RESET ALL, advisory unlock:
    one more round trip per release, ~7 % of a busy publish path): this code keeps no session
    state across an acquire (the migration lock is released in a `finally`, LISTEN lives on
    the bus's own connection). asyncpg still rolls back a transaction left open."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in server/migrations, in order."""
    out = []
    for entry in resources.files("server.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text()))
    return sorted(out)


class Storage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self._embedded: Any = None
        self.dsn: str | None = settings.database_url

    async def open(self, *, migrate: bool = True) -> None:
        if self.dsn is None:
            self.dsn, self._embedded = await embedded_pg.start(self.settings.data_dir)
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.settings.db_pool_size,
            init=_init_conn,
            reset=_release_conn,
            command_timeout=30,
        )
        if migrate:
            await self.migrate()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self._embedded is not None:
            await embedded_pg.stop(self._embedded)
            self._embedded = None

    @property
    def db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("storage is not open")
        return self.pool

    async def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction each; return the names applied."""
        applied: list[str] = []
        async with self.db.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {
                    r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
                }
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            version,
                            name,
                        )
                    applied.append(name)
                    log.info("migration applied", extra={"migration": name})
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return applied

    async def ping(self) -> bool:
        try:
            return await self.db.fetchval("SELECT 1") == 1
        except (OSError, asyncpg.PostgresError, RuntimeError):
            return False

    # -- event log --------------------------------------------------------------------------

    async def log_event(self, event: Event) -> bool:
        """Insert into the event log; False when the id was already there (a retry)."""
        status = await self.db.execute(
            "INSERT INTO events (id, type, actor, subjects, payload, ts)"
            " VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz) ON CONFLICT (id) DO NOTHING",
            event.id,
            event.type,
            event.actor,
            event.subjects,
            event.payload,
            event.ts,
        )
        return bool(status.endswith(" 1"))

    async def get_event(self, event_id: str) -> Event | None:
        row = await self.db.fetchrow("SELECT * FROM events WHERE id = $1", event_id)
        return _event(row) if row else None

    async def count_events(self, type_: str | None = None) -> int:
        if type_ is None:
            return int(await self.db.fetchval("SELECT count(*) FROM events"))
        return int(await self.db.fetchval("SELECT count(*) FROM events WHERE type = $1", type_))

    # -- in-process bus bookkeeping ---------------------------------------------------------

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
        return [_event(r) for r in rows]

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

    async def count_dead_letters(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM dead_letters"))


def _event(row: asyncpg.Record) -> Event:
    return Event(
        id=str(row["id"]),
        type=row["type"],
        actor=row["actor"],
        subjects=list(row["subjects"]),
        payload=row["payload"],
        ts=row["ts"].isoformat(),
    )
