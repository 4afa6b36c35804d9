"""The in-app inbox (`notifications`) and which event reached which user
(`notification_events`: one row per event and recipient, so a redelivered event adds nothing;
the daily caps count them).

A notification of an aggregating kind grows the recipient's open one of its group (unread,
updated within the window) instead of adding another; `lock_users` serializes that, and the
cap checks, per user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from routing.store.bulk import columns
from server.contract import Outgoing
from server.storage import Store

NOTIFICATION_COLUMNS = (
    "id, user_id, kind, priority, title, body, data, actors, actor_count, event_count,"
    " created_at, updated_at, read_at"
)
N_COLUMNS = ", ".join("n." + c.strip() for c in NOTIFICATION_COLUMNS.split(","))


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


class InboxItem(Outgoing):
    """One notification of the in-app inbox, as clients see it (`item`)."""

    id: int = Field(description="the notification's id (`before` of the next page, `read`)")
    kind: str = Field(
        description="the notification type: tip, sale, membership, live, follow, like,"
        " comment, mention, subscribe, ... (routing/priorities.py KINDS)"
    )
    priority: Literal["immediate", "standard", "batch", "silent"]
    title: str
    body: str
    data: dict[str, Any] = Field(
        description="free-form: `event_id` and the payload of the event it came from (ids"
        " of the content, user, ... it is about)"
    )
    actors: list[str] = Field(
        description="the user ids who caused it, the most recent first (at most 10)"
    )
    actor_count: int = Field(description="how many distinct users caused it (aggregated)")
    event_count: int = Field(description="how many events were collapsed into this item")
    created_at: str = Field(description="ISO 8601")
    updated_at: str = Field(description="ISO 8601: the last event collapsed into it")
    read: bool


def item(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """An inbox row as clients see it (`InboxItem`)."""
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


class InboxStore(Store):
    # -- what the router writes (inside its transaction) ------------------------------------

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

    async def insert(
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
            *columns(rows, "user_id kind priority group_key title body data actor hidden"),
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

    # -- what users see and do --------------------------------------------------------------

    async def unread_counts(
        self, user_ids: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, int]:
        rows = await (conn or self.storage.db).fetch(
            "SELECT user_id, count(*) AS n FROM notifications"
            " WHERE user_id = ANY($1::text[]) AND read_at IS NULL AND NOT hidden"
            " GROUP BY user_id",
            user_ids,
        )
        counts = {r["user_id"]: int(r["n"]) for r in rows}
        return {u: counts.get(u, 0) for u in user_ids}

    async def unread_of_kind(self, user_id: str, kind: str) -> int:
        """The user's unread notifications of one kind (mentions have their own badge)."""
        return int(
            await self.storage.db.fetchval(
                "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = $2"
                " AND read_at IS NULL AND NOT hidden",
                user_id,
                kind,
            )
        )

    async def page(
        self, user_id: str, before_id: int | None, limit: int, unread_only: bool
    ) -> list[dict[str, Any]]:
        """The user's visible notifications, newest first, older than `before_id`."""
        rows = await self.storage.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications"
            " WHERE user_id = $1 AND NOT hidden AND ($2::bigint IS NULL OR id < $2)"
            " AND (NOT $3 OR read_at IS NULL) ORDER BY id DESC LIMIT $4",
            user_id,
            before_id,
            unread_only,
            limit,
        )
        return [item(r) for r in rows]

    async def by_ids(self, ids: list[int]) -> dict[int, asyncpg.Record]:
        rows = await self.storage.db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS}, hidden FROM notifications"
            " WHERE id = ANY($1::bigint[])",
            ids,
        )
        return {r["id"]: r for r in rows}

    async def owner_of(self, notification_id: int) -> str | None:
        value = await self.storage.db.fetchval(
            "SELECT user_id FROM notifications WHERE id = $1", notification_id
        )
        return None if value is None else str(value)

    async def mark_read(
        self, user_id: str, ids: list[int] | None, now: datetime
    ) -> tuple[list[int], int, int]:
        """Mark these (or all) read; cancel their deliveries still waiting to go out.
        Returns (ids newly read, deliveries cancelled, unread left)."""
        async with self.storage.db.acquire() as conn, conn.transaction():
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
            unread = (await self.unread_counts([user_id], conn))[user_id]
        return read, cancelled, unread
