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
from server import jsonutil
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


@dataclass(slots=True)
class Grow:
    """One more event collapsed into an open notification of its group."""

    notification_id: int
    actors: list[str]
    actor_count: int
    title: str
    body: str


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

    async def claim(
        self, conn: asyncpg.Connection, pairs: list[tuple[str, str, str]], now: datetime
    ) -> set[tuple[str, str]]:
        """Record that each (event_id, user_id, kind) reaches its user; return the (event_id,
        user_id) pairs it had not reached yet."""
        rows = await conn.fetch(
            "INSERT INTO notification_events (event_id, user_id, kind, created_at)"
            " SELECT e, u, k, $4 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(e, u, k)"
            " ON CONFLICT DO NOTHING RETURNING event_id, user_id",
            [e for e, _, _ in pairs],
            [u for _, u, _ in pairs],
            [k for _, _, k in pairs],
            now,
        )
        return {(str(r["event_id"]), r["user_id"]) for r in rows}

    async def lock_users(self, conn: asyncpg.Connection, user_ids: Iterable[str]) -> None:
        """Serialize aggregation and cap checks per user (transaction-scoped advisory locks)."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('routing:' || u, 0))"
            " FROM unnest($1::text[]) AS u ORDER BY u",
            sorted(set(user_ids)),
        )

    async def counts_since(
        self, conn: asyncpg.Connection, pairs: list[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], int]:
        """Per (user_id, kind): the counted notifications since `since` (the daily caps), in
        one query for the lot."""
        if not pairs:
            return {}
        rows = await conn.fetch(
            "SELECT ne.user_id, ne.kind, count(*) AS n FROM notification_events ne"
            " JOIN (SELECT DISTINCT u, k FROM unnest($1::text[], $2::text[]) AS x(u, k)) x"
            "  ON ne.user_id = x.u AND ne.kind = x.k"
            " WHERE ne.counted AND ne.created_at > $3 GROUP BY ne.user_id, ne.kind",
            [u for u, _ in pairs],
            [k for _, k in pairs],
            since,
        )
        return {(r["user_id"], r["kind"]): int(r["n"]) for r in rows}

    async def open_groups(
        self, conn: asyncpg.Connection, pairs: list[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], asyncpg.Record]:
        """Per (user_id, group_key): the unread notification of that group updated within the
        window, locked; one query for the lot."""
        if not pairs:
            return {}
        rows = await conn.fetch(
            f"SELECT {NOTIFICATION_COLUMNS}, group_key FROM notifications WHERE id IN ("
            " SELECT DISTINCT ON (n.user_id, n.group_key) n.id FROM notifications n"
            " JOIN unnest($1::text[], $2::text[]) AS x(u, g) ON n.user_id = x.u"
            "  AND n.group_key = x.g"
            " WHERE n.read_at IS NULL AND NOT n.hidden AND n.updated_at > $3"
            " ORDER BY n.user_id, n.group_key, n.updated_at DESC, n.id DESC)"
            " FOR UPDATE",
            [u for u, _ in pairs],
            [g for _, g in pairs],
            since,
        )
        return {(r["user_id"], r["group_key"]): r for r in rows}

    async def grow_groups(self, conn: asyncpg.Connection, grows: list[Grow], now: datetime) -> None:
        """Collapse one more event into each of these open notifications, in one statement."""
        if not grows:
            return
        await conn.execute(
            "UPDATE notifications n"
            " SET actors = ARRAY(SELECT jsonb_array_elements_text(x.a::jsonb)),"
            " actor_count = x.c, title = x.t, body = x.b,"
            " event_count = n.event_count + 1, updated_at = $6"
            " FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[])"
            "  AS x(id, a, c, t, b) WHERE n.id = x.id",
            [g.notification_id for g in grows],
            # a list per row: as JSON text (nested lists would be read as array dimensions)
            [jsonutil.dumps(g.actors) for g in grows],
            *columns(grows, "actor_count title body"),
            now,
        )

    async def insert(
        self, conn: asyncpg.Connection, rows: list[NewNotification], now: datetime
    ) -> list[int]:
        """Bulk insert; returns the new ids in the same order (taken from the sequence first,
        so one user may get several rows in one statement)."""
        if not rows:
            return []
        ids = [
            int(r[0])
            for r in await conn.fetch(
                "SELECT nextval(pg_get_serial_sequence('notifications', 'id'))"
                " FROM generate_series(1, $1)",
                len(rows),
            )
        ]
        await conn.execute(
            "INSERT INTO notifications (id, user_id, kind, priority, group_key, title, body,"
            " data, actors, actor_count, hidden, created_at, updated_at)"
            " SELECT i, u, k, p, g, t, b, d,"
            "  CASE WHEN a IS NULL THEN '{}'::text[] ELSE ARRAY[a] END,"
            "  CASE WHEN a IS NULL THEN 0 ELSE 1 END, h, $11, $11"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            "  $6::text[], $7::jsonb[], $8::text[], $9::bool[], $10::bigint[])"
            "  AS x(u, k, p, g, t, b, d, a, h, i)",
            *columns(rows, "user_id kind priority group_key title body data actor hidden"),
            ids,
            now,
        )
        return ids

    async def link_events(
        self, conn: asyncpg.Connection, links: list[tuple[str, str, int, bool]]
    ) -> None:
        """(event_id, user_id, notification_id, counted) for the events' new recipients."""
        await conn.execute(
            "UPDATE notification_events ne SET notification_id = x.n, counted = x.c"
            " FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bool[]) AS x(e, u, n, c)"
            " WHERE ne.event_id = x.e AND ne.user_id = x.u",
            [e for e, _, _, _ in links],
            [u for _, u, _, _ in links],
            [n for _, _, n, _ in links],
            [c for _, _, _, c in links],
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
