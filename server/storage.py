"""Storage: the asyncpg pool and the versioned SQL migrations.

The same code drives the embedded PostgreSQL (pgserver) and a production server
(`OURS_DATABASE_URL`): one dialect, one set of migrations.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg

from config import Settings
from server import embedded_pg, jsonutil

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
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        if applied:
            log.info(
                "migrations applied",
                extra={"count": len(applied), "first": applied[0], "last": applied[-1]},
            )
        return applied

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction: committed on exit, rolled back on error."""
        async with self.db.acquire() as conn, conn.transaction():
            yield conn

    async def ping(self) -> bool:
        try:
            return await self.db.fetchval("SELECT 1") == 1
        except (OSError, asyncpg.PostgresError, RuntimeError):
            return False


class Store:
    """The base of every feature's SQL class: the storage, its pool (`db`) and one transaction
    helper. Methods that must run in a caller's transaction take its connection first."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def db(self) -> asyncpg.Pool:
        return self.storage.db

    def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self.storage.transaction()
