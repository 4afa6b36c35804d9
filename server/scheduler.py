"""Durable scheduled jobs in storage: scheduled messages, digests, the daily brief, deferred
notifications. A job runs once (its `key` is unique); jobs due while the server was down run
at the next start; several processes share the work with `FOR UPDATE SKIP LOCKED`.

    node.scheduler.register("message.deliver", handler)      # async handler(payload) -> None
    await node.scheduler.schedule("message.deliver", key, run_at, payload)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from server import errors
from server.clock import utcnow
from server.personal_data import Erasure
from server.storage import Storage

log = logging.getLogger("ours.scheduler")

JobHandler = Callable[[dict[str, Any]], Awaitable[None]]


class Scheduler:
    def __init__(
        self, storage: Storage, *, poll_interval: float = 0.5, max_attempts: int = 5
    ) -> None:
        self.storage = storage
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.handlers: dict[str, JobHandler] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def register(self, kind: str, handler: JobHandler) -> None:
        self.handlers[kind] = handler

    async def schedule(
        self,
        kind: str,
        key: str,
        run_at: datetime,
        payload: dict[str, Any] | None = None,
        *,
        conn: Any = None,
        replace: bool = False,
    ) -> bool:
        """Add a job; False when a job with this key already exists (unless `replace`)."""
        sql = (
            "INSERT INTO jobs (kind, key, run_at, payload) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (key) DO "
            + (
                "UPDATE SET run_at = EXCLUDED.run_at, payload = EXCLUDED.payload,"
                " state = 'pending', attempts = 0 WHERE jobs.state <> 'running'"
                if replace
                else "NOTHING"
            )
        )
        status = await (conn or self.storage.db).execute(sql, kind, key, run_at, payload or {})
        if run_at <= utcnow() + timedelta(seconds=self.poll_interval):
            self._wake.set()
        return bool(status.endswith(" 1"))

    async def cancel(self, key: str, *, conn: Any = None) -> bool:
        status = await (conn or self.storage.db).execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = now()"
            " WHERE key = $1 AND state = 'pending'",
            key,
        )
        return bool(status.endswith(" 1"))

    async def erase_user(self, e: Erasure) -> None:
        """Jobs whose payload names the user (digests, briefs, sweeps of others) are dropped."""
        await e.execute(
            "jobs",
            "DELETE FROM jobs WHERE payload IS DISTINCT FROM privacy_erase_json(payload, $1, $2)",
            e.user_id,
            e.pseudonym,
        )

    async def drop(self, keys: list[str], *, conn: Any = None) -> None:
        """Delete these jobs whatever their state."""
        if keys:
            await (conn or self.storage.db).execute(
                "DELETE FROM jobs WHERE key = ANY($1::text[])", keys
            )

    async def get(self, key: str) -> dict[str, Any] | None:
        row = await self.storage.db.fetchrow("SELECT * FROM jobs WHERE key = $1", key)
        return dict(row) if row else None

    async def backlog(self) -> dict[str, int]:
        """Jobs due now and not yet run, running, scheduled later, and failed for good."""
        row = await self.storage.db.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'pending' AND run_at <= now()) AS due,"
            " count(*) FILTER (WHERE state = 'running') AS running,"
            " count(*) FILTER (WHERE state = 'pending' AND run_at > now()) AS scheduled,"
            " count(*) FILTER (WHERE state = 'failed') AS failed"
            " FROM jobs WHERE state IN ('pending', 'running', 'failed')"
        )
        assert row is not None
        return {k: int(row[k]) for k in ("due", "running", "scheduled", "failed")}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                ran = await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.log_failure(log, "scheduler pass failed", exc)
                ran = 0
            if ran:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def run_due(self, limit: int = 50) -> int:
        """Claim and run due jobs; return how many ran."""
        rows = await self.storage.db.fetch(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
            " locked_until = now() + interval '5 minutes'"
            " WHERE id IN (SELECT id FROM jobs WHERE run_at <= now() AND"
            "  (state = 'pending' OR (state = 'running' AND locked_until < now()))"
            "  AND kind = ANY($2::text[])"
            "  ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, kind, key, payload, attempts",
            limit,
            list(self.handlers),
        )
        for row in rows:
            await self._run(row)
        return len(rows)

    async def _run(self, row: Any) -> None:
        handler = self.handlers[row["kind"]]
        try:
            await handler(row["payload"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if row["attempts"] >= self.max_attempts:
                state, delay = "failed", 0.0
                log.error("job failed for good", extra={"kind": row["kind"], "error": error})
            else:
                state = "pending"
                delay = min(300.0, 2 ** row["attempts"]) * (0.5 + random.random())
                log.warning("job failed; will retry", extra={"kind": row["kind"], "error": error})
            await self.storage.db.execute(
                "UPDATE jobs SET state = $2, last_error = $3, locked_until = NULL,"
                " run_at = now() + make_interval(secs => $4),"
                " finished_at = CASE WHEN $2 = 'failed' THEN now() END WHERE id = $1",
                row["id"],
                state,
                error[:2000],
                delay,
            )
            return
        await self.storage.db.execute(
            "UPDATE jobs SET state = 'done', finished_at = now(), locked_until = NULL"
            " WHERE id = $1 AND state = 'running'",
            row["id"],
        )
