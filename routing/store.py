"""The router's SQL: preferences, push devices, the inbox and the delivery log (migration 0003).

Every statement that the fan-out path runs per recipient is a bulk statement (unnest arrays),
so one event to thousands of users costs a handful of round trips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from routing.preferences import Preferences
from server.storage import Storage

DIGEST_JOB = "routing.digest"


@dataclass(slots=True)
class NewNotification:
    user_id: str
    kind: str
    priority: str
    title: str
    body: str
    data: dict[str, Any]
    actor: str | None
    group_key: str | None
    hidden: bool


@dataclass(slots=True)
class DeliveryRow:
    user_id: str
    channel: str
    notification_id: int
    priority: str
    state: str
    reason: str | None = None
    detail: str | None = None
    batch_key: str | None = None
    not_before: datetime | None = None


@dataclass(slots=True)
class Outcome:
    """What became of leased delivery rows after a send (or a decision not to send)."""

    ids: list[int]
    state: str
    at: datetime
    reason: str | None = None
    keep_reason: bool = False  # keep the row's reason (e.g. quiet_hours when finally sent)
    detail: str | None = None
    provider_id: str | None = None
    not_before: datetime | None = None
    attempted: bool = True


NOTIFICATION_COLUMNS = (
    "id, user_id, kind, priority, title, body, data, actors, actor_count, event_count,"
    " created_at, updated_at, read_at"
)
N_COLUMNS = ", ".join("n." + c.strip() for c in NOTIFICATION_COLUMNS.split(","))


def item(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """An inbox row as clients see it."""
    return {
        "id": row["id"],
        "kind": row["kind"],
        "priority": row["priority"],
        "title": row["title"],
        "body": row["body"],
        "data": row["data"],
        "actors": list(row["actors"]),
        "actor_count": row["actor_count"],
        "event_count": row["event_count"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "read": row["read_at"] is not None,
    }


def delivery(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": str(row["event_id"]),
        "user_id": row["user_id"],
        "channel": row["channel"],
        "priority": row["priority"],
        "state": row["state"],
        "reason": row["reason"],
        "detail": row["detail"],
        "attempts": row["attempts"],
        "not_before": row["not_before"].isoformat() if row["not_before"] else None,
        "provider_id": row["provider_id"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
    }


class RouterStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def db(self) -> asyncpg.Pool:
        return self.storage.db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.db.acquire() as conn, conn.transaction():
            yield conn

    # -- preferences ------------------------------------------------------------------------

    async def load_prefs(
        self, user_ids: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, Preferences]:
        rows = await (conn or self.db).fetch(
            "SELECT user_id, prefs FROM notification_prefs WHERE user_id = ANY($1::text[])",
            user_ids,
        )
        stored = {r["user_id"]: Preferences.model_validate(r["prefs"]) for r in rows}
        default = Preferences()
        return {u: stored.get(u, default) for u in user_ids}

    async def get_prefs(self, user_id: str) -> Preferences:
        return (await self.load_prefs([user_id]))[user_id]

    async def save_prefs(self, user_id: str, prefs: Preferences) -> None:
        await self.db.execute(
            "INSERT INTO notification_prefs (user_id, prefs) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET prefs = EXCLUDED.prefs, updated_at = now()",
            user_id,
            prefs.model_dump(mode="json"),
        )

    # -- push devices -----------------------------------------------------------------------

    async def register_device(
        self, user_id: str, token: str, platform: str, max_per_user: int
    ) -> int:
        """Upsert the token for this user; drop the user's oldest beyond the cap; return count."""
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO push_devices (token, user_id, platform) VALUES ($1, $2, $3)"
                " ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id,"
                " platform = EXCLUDED.platform, last_seen_at = now()",
                token,
                user_id,
                platform,
            )
            await conn.execute(
                "DELETE FROM push_devices WHERE user_id = $1 AND token IN ("
                " SELECT token FROM push_devices WHERE user_id = $1"
                " ORDER BY last_seen_at DESC OFFSET $2)",
                user_id,
                max_per_user,
            )
            return int(
                await conn.fetchval("SELECT count(*) FROM push_devices WHERE user_id = $1", user_id)
            )

    async def unregister_device(self, user_id: str, token: str) -> bool:
        status = await self.db.execute(
            "DELETE FROM push_devices WHERE token = $1 AND user_id = $2", token, user_id
        )
        return bool(status.endswith(" 1"))

    async def devices(self, user_id: str) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT token, platform FROM push_devices WHERE user_id = $1"
            " ORDER BY last_seen_at DESC",
            user_id,
        )
        return [(r["token"], r["platform"]) for r in rows]

    async def devices_of(self, user_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        rows = await self.db.fetch(
            "SELECT user_id, token, platform FROM push_devices"
            " WHERE user_id = ANY($1::text[]) ORDER BY user_id, last_seen_at DESC",
            user_ids,
        )
        out: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            out.setdefault(r["user_id"], []).append((r["token"], r["platform"]))
        return out

    async def prune_devices(self, tokens: list[str]) -> int:
        status = await self.db.execute(
            "DELETE FROM push_devices WHERE token = ANY($1::text[])", tokens
        )
        return int(status.split()[-1])

    # -- the inbox --------------------------------------------------------------------------

    async def claim_event(
        self,
        conn: asyncpg.Connection,
        event_id: str,
        user_ids: list[str],
        kind: str,
        now: datetime,
    ) -> list[str]:
        """Record that `event_id` reaches these users; return those it had not reached yet."""
        rows = await conn.fetch(
            "INSERT INTO notification_events (event_id, user_id, kind, created_at)"
            " SELECT $1, u, $3, $4 FROM unnest($2::text[]) AS u"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            event_id,
            user_ids,
            kind,
            now,
        )
        return [r["user_id"] for r in rows]

    async def lock_users(self, conn: asyncpg.Connection, user_ids: Iterable[str]) -> None:
        """Serialize aggregation and cap checks per user (transaction-scoped advisory locks)."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('routing:' || u, 0))"
            " FROM unnest($1::text[]) AS u ORDER BY u",
            sorted(set(user_ids)),
        )

    async def count_since(
        self, conn: asyncpg.Connection, user_id: str, kind: str, since: datetime
    ) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM notification_events"
                " WHERE user_id = $1 AND kind = $2 AND counted AND created_at > $3",
                user_id,
                kind,
                since,
            )
        )

    async def open_group(
        self, conn: asyncpg.Connection, user_id: str, group_key: str, since: datetime
    ) -> asyncpg.Record | None:
        """The unread notification of this group updated within the window, locked."""
        return await conn.fetchrow(
            f"SELECT {NOTIFICATION_COLUMNS}, group_key FROM notifications"
            " WHERE user_id = $1 AND group_key = $2 AND read_at IS NULL AND NOT hidden"
            " AND updated_at > $3 ORDER BY updated_at DESC LIMIT 1 FOR UPDATE",
            user_id,
            group_key,
            since,
        )

    async def grow_group(
        self,
        conn: asyncpg.Connection,
        notification_id: int,
        actors: list[str],
        actor_count: int,
        title: str,
        body: str,
        now: datetime,
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            "UPDATE notifications SET actors = $2, actor_count = $3, title = $4, body = $5,"
            " event_count = event_count + 1, updated_at = $6 WHERE id = $1"
            f" RETURNING {NOTIFICATION_COLUMNS}",
            notification_id,
            actors,
            actor_count,
            title,
            body,
            now,
        )
        assert row is not None
        return row

    async def insert_notifications(
        self, conn: asyncpg.Connection, rows: list[NewNotification], now: datetime
    ) -> list[asyncpg.Record]:
        """Bulk insert; returns the rows in the same order."""
        if not rows:
            return []
        out = await conn.fetch(
            "INSERT INTO notifications (user_id, kind, priority, group_key, title, body, data,"
            " actors, actor_count, hidden, created_at, updated_at)"
            " SELECT u, k, p, g, t, b, d,"
            "  CASE WHEN a IS NULL THEN '{}'::text[] ELSE ARRAY[a] END,"
            "  CASE WHEN a IS NULL THEN 0 ELSE 1 END, h, $11, $11"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            "  $6::text[], $7::jsonb[], $8::text[], $9::bool[], $10::int[])"
            "  AS x(u, k, p, g, t, b, d, a, h, o)"
            " ORDER BY o"
            f" RETURNING {NOTIFICATION_COLUMNS}, hidden",
            [r.user_id for r in rows],
            [r.kind for r in rows],
            [r.priority for r in rows],
            [r.group_key for r in rows],
            [r.title for r in rows],
            [r.body for r in rows],
            [r.data for r in rows],
            [r.actor for r in rows],
            [r.hidden for r in rows],
            list(range(len(rows))),
            now,
        )
        by_user = {r["user_id"]: r for r in out}
        return [by_user[r.user_id] for r in rows]

    async def link_events(
        self,
        conn: asyncpg.Connection,
        event_id: str,
        links: list[tuple[str, int, bool]],
    ) -> None:
        """(user_id, notification_id, counted) for the event's new recipients."""
        await conn.execute(
            "UPDATE notification_events ne SET notification_id = x.n, counted = x.c"
            " FROM unnest($2::text[], $3::bigint[], $4::bool[]) AS x(u, n, c)"
            " WHERE ne.event_id = $1 AND ne.user_id = x.u",
            event_id,
            [u for u, _, _ in links],
            [n for _, n, _ in links],
            [c for _, _, c in links],
        )

    async def unread_counts(self, user_ids: list[str]) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT user_id, count(*) AS n FROM notifications"
            " WHERE user_id = ANY($1::text[]) AND read_at IS NULL AND NOT hidden"
            " GROUP BY user_id",
            user_ids,
        )
        counts = {r["user_id"]: int(r["n"]) for r in rows}
        return {u: counts.get(u, 0) for u in user_ids}

    async def list_inbox(
        self, user_id: str, before_id: int | None, limit: int, unread_only: bool
    ) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications"
            " WHERE user_id = $1 AND NOT hidden AND ($2::bigint IS NULL OR id < $2)"
            " AND (NOT $3 OR read_at IS NULL) ORDER BY id DESC LIMIT $4",
            user_id,
            before_id,
            unread_only,
            limit,
        )
        return [item(r) for r in rows]

    async def notifications(self, ids: list[int]) -> dict[int, asyncpg.Record]:
        rows = await self.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS}, hidden FROM notifications"
            " WHERE id = ANY($1::bigint[])",
            ids,
        )
        return {r["id"]: r for r in rows}

    async def owner_of(self, notification_id: int) -> str | None:
        value = await self.db.fetchval(
            "SELECT user_id FROM notifications WHERE id = $1", notification_id
        )
        return None if value is None else str(value)

    async def mark_read(
        self, user_id: str, ids: list[int] | None, now: datetime
    ) -> tuple[list[int], int, int]:
        """Mark these (or all) read; cancel their deliveries still waiting to go out.
        Returns (ids newly read, deliveries cancelled, unread left)."""
        async with self.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE notifications SET read_at = $3 WHERE user_id = $1"
                " AND read_at IS NULL AND NOT hidden AND ($2::bigint[] IS NULL OR id = ANY($2))"
                " RETURNING id",
                user_id,
                ids,
                now,
            )
            read = [r["id"] for r in rows]
            cancelled = 0
            if read:
                status = await conn.execute(
                    "UPDATE deliveries SET state = 'skipped', reason = 'read',"
                    " detail = 'read in-app before it went out', updated_at = $2,"
                    " not_before = NULL"
                    " WHERE notification_id = ANY($1::bigint[]) AND state = 'queued'"
                    " AND channel <> 'in_app'"
                    " AND (locked_until IS NULL OR locked_until < now())",
                    read,
                    now,
                )
                cancelled = int(status.split()[-1])
            unread = int(
                await conn.fetchval(
                    "SELECT count(*) FROM notifications"
                    " WHERE user_id = $1 AND read_at IS NULL AND NOT hidden",
                    user_id,
                )
            )
        return read, cancelled, unread

    # -- the delivery log -------------------------------------------------------------------

    async def insert_deliveries(
        self, conn: asyncpg.Connection, event_id: str, rows: list[DeliveryRow], now: datetime
    ) -> None:
        if not rows:
            return
        await conn.execute(
            "INSERT INTO deliveries (event_id, user_id, channel, notification_id, priority,"
            " state, reason, detail, batch_key, not_before, created_at, updated_at)"
            " SELECT $1, u, c, n, p, s, r, d, b, nb, $11, $11"
            " FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],"
            "  $7::text[], $8::text[], $9::text[], $10::timestamptz[])"
            "  AS x(u, c, n, p, s, r, d, b, nb)"
            " ON CONFLICT (event_id, user_id, channel) DO NOTHING",
            event_id,
            [r.user_id for r in rows],
            [r.channel for r in rows],
            [r.notification_id for r in rows],
            [r.priority for r in rows],
            [r.state for r in rows],
            [r.reason for r in rows],
            [r.detail for r in rows],
            [r.batch_key for r in rows],
            [r.not_before for r in rows],
            now,
        )

    async def email_timing(
        self, conn: asyncpg.Connection, user_ids: list[str]
    ) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Per user: (earliest due time of a queued email batch, when the last email went)."""
        pending = await conn.fetch(
            "SELECT user_id, min(not_before) AS t FROM deliveries WHERE user_id = ANY($1::text[])"
            " AND channel = 'email' AND state = 'queued' GROUP BY user_id",
            user_ids,
        )
        sent = await conn.fetch(
            "SELECT user_id, max(sent_at) AS t FROM deliveries WHERE user_id = ANY($1::text[])"
            " AND channel = 'email' AND state = 'sent' GROUP BY user_id",
            user_ids,
        )
        first = {r["user_id"]: r["t"] for r in pending}
        last = {r["user_id"]: r["t"] for r in sent}
        return {u: (first.get(u), last.get(u)) for u in user_ids}

    async def take_in_app(
        self, event_id: str, user_ids: list[str], now: datetime
    ) -> list[tuple[str, asyncpg.Record, int]]:
        """Flip this event's queued in-app rows to delivered; return (user, notification row,
        unread count) for those flipped: the sockets to tell. A concurrent or repeated handling
        of the event flips none."""
        rows = await self.db.fetch(
            "WITH taken AS (UPDATE deliveries SET state = 'delivered', updated_at = $3,"
            "  sent_at = $3 WHERE event_id = $1 AND channel = 'in_app' AND state = 'queued'"
            "  AND user_id = ANY($2::text[]) RETURNING user_id, notification_id),"
            " unread AS (SELECT user_id, count(*) AS n FROM notifications"
            "  WHERE user_id = ANY($2::text[]) AND read_at IS NULL AND NOT hidden"
            "  GROUP BY user_id)"
            f" SELECT t.user_id AS recipient, {N_COLUMNS}, COALESCE(u.n, 0) AS unread"
            " FROM taken t JOIN notifications n ON n.id = t.notification_id"
            " LEFT JOIN unread u ON u.user_id = t.user_id",
            event_id,
            user_ids,
            now,
        )
        return [(r["recipient"], r, int(r["unread"])) for r in rows]

    async def claim_due(
        self, channel: str, now: datetime, limit: int, lease_s: float
    ) -> list[asyncpg.Record]:
        """Lease due deliveries of one channel: single ones by id, batched ones as whole batches
        (every queued row of the user's batch, due or not: an email batch takes all waiting)."""
        async with self.transaction() as conn:
            singles = await conn.fetch(
                "UPDATE deliveries SET locked_until = now() + make_interval(secs => $4)"
                " WHERE id IN (SELECT id FROM deliveries WHERE channel = $1"
                "  AND state = 'queued' AND batch_key IS NULL AND not_before <= $2"
                "  AND (locked_until IS NULL OR locked_until < now())"
                "  ORDER BY not_before LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                channel,
                now,
                limit,
                lease_s,
            )
            # batches: find the due (user, batch) pairs, then lease all their waiting rows; two
            # index-friendly statements (a join of the table with itself planned on stale
            # statistics can turn quadratic while the table grows fast)
            due = await conn.fetch(
                "SELECT DISTINCT user_id, batch_key FROM deliveries"
                " WHERE channel = $1 AND state = 'queued' AND batch_key IS NOT NULL"
                " AND not_before <= $2 AND (locked_until IS NULL OR locked_until < now())"
                " LIMIT $3",
                channel,
                now,
                limit,
            )
            batched: list[asyncpg.Record] = []
            if due:
                batched = await conn.fetch(
                    "UPDATE deliveries SET locked_until = now() + make_interval(secs => $4)"
                    " WHERE user_id = ANY($2::text[]) AND channel = $1 AND state = 'queued'"
                    " AND user_id || chr(31) || batch_key = ANY($3::text[])"
                    " AND (locked_until IS NULL OR locked_until < now())"
                    " RETURNING *",
                    channel,
                    list({r["user_id"] for r in due}),
                    [f"{r['user_id']}\x1f{r['batch_key']}" for r in due],
                    lease_s,
                )
        return [*singles, *batched]

    async def finish(self, outcomes: list[Outcome]) -> None:
        """Record outcomes for leased rows and release their leases, in one statement."""
        rows = [(i, o) for o in outcomes for i in o.ids]
        if not rows:
            return
        await self.db.execute(
            "UPDATE deliveries d SET state = x.state,"
            " reason = CASE WHEN x.keep THEN d.reason ELSE x.reason END, detail = x.detail,"
            " provider_id = COALESCE(x.pid, d.provider_id), not_before = x.nb,"
            " attempts = d.attempts + CASE WHEN x.att THEN 1 ELSE 0 END,"
            " sent_at = CASE WHEN x.state IN ('sent', 'delivered') THEN x.at ELSE d.sent_at END,"
            " updated_at = x.at, locked_until = NULL"
            " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::text[],"
            "  $6::text[], $7::timestamptz[], $8::bool[], $9::timestamptz[])"
            "  AS x(id, state, reason, keep, detail, pid, nb, att, at)"
            " WHERE d.id = x.id AND d.id = ANY($1::bigint[])",
            [i for i, _ in rows],
            [o.state for _, o in rows],
            [o.reason for _, o in rows],
            [o.keep_reason for _, o in rows],
            [o.detail for _, o in rows],
            [o.provider_id for _, o in rows],
            [o.not_before for _, o in rows],
            [o.attempted for _, o in rows],
            [o.at for _, o in rows],
        )

    async def deliveries_of(self, notification_id: int) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM deliveries WHERE notification_id = $1 ORDER BY event_id, id",
            notification_id,
        )
        return [delivery(r) for r in rows]

    async def deliveries_of_event(self, event_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM deliveries WHERE event_id = $1 ORDER BY user_id, id", event_id
        )
        return [delivery(r) for r in rows]

    # -- digests ----------------------------------------------------------------------------

    async def ensure_digest_jobs(
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

    async def last_digest(self, user_id: str) -> datetime | None:
        value = await self.db.fetchval(
            "SELECT last_sent_at FROM digest_runs WHERE user_id = $1", user_id
        )
        return value if isinstance(value, datetime) else None

    async def record_digest(self, user_id: str, mode: str, at: datetime) -> None:
        await self.db.execute(
            "INSERT INTO digest_runs (user_id, mode, last_sent_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET mode = $2, last_sent_at = $3",
            user_id,
            mode,
            at,
        )

    async def digest_items(
        self, user_id: str, since: datetime, until: datetime, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        rows = await self.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS}, count(*) OVER () AS total FROM notifications"
            " WHERE user_id = $1 AND NOT hidden AND updated_at > $2 AND updated_at <= $3"
            " ORDER BY updated_at DESC LIMIT $4",
            user_id,
            since,
            until,
            limit,
        )
        return [item(r) for r in rows], (int(rows[0]["total"]) if rows else 0)

    # -- a user's data (export / delete) ----------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        prefs = await self.get_prefs(user_id)
        inbox = await self.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        devices = await self.db.fetch(
            "SELECT platform, created_at, last_seen_at FROM push_devices WHERE user_id = $1",
            user_id,
        )
        deliveries = await self.db.fetch(
            "SELECT * FROM deliveries WHERE user_id = $1 ORDER BY id", user_id
        )
        return {
            "preferences": prefs.public(),
            "notifications": [item(r) for r in inbox],
            "devices": [
                {
                    "platform": r["platform"],
                    "created_at": r["created_at"].isoformat(),
                    "last_seen_at": r["last_seen_at"].isoformat(),
                }
                for r in devices
            ],
            "deliveries": [delivery(r) for r in deliveries],
        }

    async def delete_user(self, conn: asyncpg.Connection, user_id: str) -> None:
        """Remove every router row of this user (inside the caller's transaction)."""
        for table in (
            "deliveries",
            "notification_events",
            "notifications",
            "push_devices",
            "notification_prefs",
            "digest_runs",
        ):
            await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)
        await conn.execute(
            "DELETE FROM jobs WHERE kind = $1 AND payload->>'user_id' = $2", DIGEST_JOB, user_id
        )
