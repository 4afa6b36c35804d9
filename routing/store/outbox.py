"""The delivery log (`deliveries`), which is also the outbox: one row per notification,
recipient and channel. The router plans them (queued, or skipped with the reason), the
dispatcher leases the due ones and records what became of each, and users read them back
as why a notification did or did not arrive."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from routing.priorities import Channel
from routing.store.bulk import columns
from routing.store.inbox import N_COLUMNS
from server import jsonutil
from server.contract import Outgoing
from server.storage import Store


@dataclass(slots=True)
class DeliveryRow:
    event_id: str
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
class SkipGroup:
    """Recipients of one event whose channels were all skipped the same way at planning time
    (`delivery_skips`): channel -> (reason, detail)."""

    event_id: str
    priority: str
    skips: dict[str, tuple[str, str]]
    user_ids: list[str] = field(default_factory=list)


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


class Delivery(Outgoing):
    """One row of the delivery log, as clients see it (`delivery`): what became of one
    notification for one recipient on one channel."""

    id: int
    event_id: str = Field(description="the event (UUID) the notification came from")
    user_id: str = Field(description="the recipient")
    channel: Literal["in_app", "push", "email", "sms", "telegram"]
    priority: Literal["immediate", "standard", "batch", "silent"]
    state: Literal["queued", "sent", "delivered", "failed", "skipped"]
    reason: str | None = Field(
        description="why skipped, failed or delayed: preference, cap, quiet_hours, read,"
        " provider_error, ..."
    )
    detail: str | None = Field(description="the reason in words")
    attempts: int = Field(description="send attempts so far")
    not_before: str | None = Field(description="ISO 8601: not sent before (queued ones)")
    provider_id: str | None = Field(description="the provider's message id, once sent")
    created_at: str = Field(description="ISO 8601")
    updated_at: str = Field(description="ISO 8601")
    sent_at: str | None = Field(description="ISO 8601: when it was sent or delivered")


def delivery(row: asyncpg.Record) -> dict[str, Any]:
    """A delivery-log row as clients see it (`Delivery`)."""
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


class OutboxStore(Store):
    # -- what the router plans (inside its transaction) -------------------------------------

    async def insert(
        self, conn: asyncpg.Connection, rows: list[DeliveryRow], now: datetime
    ) -> None:
        """The planned (queued) rows, with COPY: the router claimed their (event, recipient)
        pairs in this transaction, so none exists yet."""
        if not rows:
            return
        await conn.copy_records_to_table(
            "deliveries",
            columns=DELIVERY_COPY_COLUMNS,
            records=[
                (
                    uuid.UUID(r.event_id),
                    r.user_id,
                    r.channel,
                    r.notification_id,
                    r.priority,
                    r.state,
                    r.reason,
                    r.detail,
                    r.batch_key,
                    r.not_before,
                    now,
                    now,
                )
                for r in rows
            ],
        )

    async def insert_skips(
        self, conn: asyncpg.Connection, groups: list[SkipGroup], now: datetime
    ) -> None:
        """What was skipped at planning time, one row per event and way of skipping."""
        if not groups:
            return
        await conn.execute(
            "INSERT INTO delivery_skips (event_id, priority, skips, user_ids, created_at)"
            " SELECT e, p, s, ARRAY(SELECT jsonb_array_elements_text(u::jsonb)), $5"
            " FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[]) AS x(e, p, s, u)",
            [g.event_id for g in groups],
            [g.priority for g in groups],
            [{ch: list(why) for ch, why in g.skips.items()} for g in groups],
            # a list per row: as JSON text (nested lists would be read as array dimensions)
            [jsonutil.dumps(g.user_ids) for g in groups],
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

    # -- sending ----------------------------------------------------------------------------

    async def take_in_app(
        self, pairs: list[tuple[str, str]], now: datetime
    ) -> list[tuple[str, asyncpg.Record, int]]:
        """Flip the queued in-app rows of these (event_id, user_id) pairs to delivered; return
        (user, notification row, unread count) for those flipped: the sockets to tell. A
        concurrent or repeated handling of the events flips none."""
        if not pairs:
            return []
        rows = await self.storage.db.fetch(
            "WITH taken AS (UPDATE deliveries d SET state = 'delivered', updated_at = $3,"
            "  sent_at = $3 FROM unnest($1::uuid[], $2::text[]) AS x(e, u)"
            "  WHERE d.event_id = x.e AND d.user_id = x.u AND d.channel = 'in_app'"
            "  AND d.state = 'queued' RETURNING d.user_id, d.notification_id, d.id),"
            " unread AS (SELECT user_id, count(*) AS n FROM notifications"
            "  WHERE user_id IN (SELECT user_id FROM taken) AND read_at IS NULL AND NOT hidden"
            "  GROUP BY user_id)"
            f" SELECT t.user_id AS recipient, {N_COLUMNS}, COALESCE(u.n, 0) AS unread"
            " FROM taken t JOIN notifications n ON n.id = t.notification_id"
            " LEFT JOIN unread u ON u.user_id = t.user_id ORDER BY t.id",
            [e for e, _ in pairs],
            [u for _, u in pairs],
            now,
        )
        return [(r["recipient"], r, int(r["unread"])) for r in rows]

    async def claim_due(
        self, channel: str, now: datetime, limit: int, lease_s: float
    ) -> list[asyncpg.Record]:
        """Lease due deliveries of one channel: single ones by id, batched ones as whole batches
        (every queued row of the user's batch, due or not: an email batch takes all waiting)."""
        async with self.storage.db.acquire() as conn, conn.transaction():
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
        ids = [i for o in outcomes for i in o.ids]
        if not ids:
            return
        per_row = [o for o in outcomes for _ in o.ids]
        await self.storage.db.execute(
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
            ids,
            *columns(
                per_row, "state reason keep_reason detail provider_id not_before attempted at"
            ),
        )

    # -- the log, read back -----------------------------------------------------------------

    async def of_notification(self, notification_id: int) -> list[dict[str, Any]]:
        """Every delivery of the events that went into this notification (ordered by event,
        then channel), the compact skipped ones included."""
        db = self.storage.db
        rows = await db.fetch(
            "SELECT * FROM deliveries WHERE notification_id = $1", notification_id
        )
        skipped = await db.fetch(
            "SELECT s.*, ne.user_id AS recipient FROM notification_events ne"
            " JOIN delivery_skips s ON s.event_id = ne.event_id"
            "  AND s.user_ids @> ARRAY[ne.user_id]"
            " WHERE ne.notification_id = $1",
            notification_id,
        )
        return _ordered(rows, skipped)

    async def of_event(self, event_id: str) -> list[dict[str, Any]]:
        """Every delivery of one event (ordered by recipient, then channel)."""
        async with self._snapshot() as conn:
            rows = await conn.fetch("SELECT * FROM deliveries WHERE event_id = $1", event_id)
            skipped = await conn.fetch(
                "SELECT s.*, u AS recipient FROM delivery_skips s, unnest(s.user_ids) AS u"
                " WHERE s.event_id = $1",
                event_id,
            )
        return _ordered(rows, skipped, by_user=True)

    async def of_user(self, user_id: str) -> list[dict[str, Any]]:
        """A user's whole delivery log (the export), oldest first."""
        async with self._snapshot() as conn:
            rows = await conn.fetch("SELECT * FROM deliveries WHERE user_id = $1", user_id)
            skipped = await conn.fetch(
                "SELECT s.*, $1::text AS recipient FROM delivery_skips s"
                " WHERE s.user_ids @> ARRAY[$1::text]",
                user_id,
            )
        return _ordered(rows, skipped, by_time=True)

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """One read-only snapshot for a log read: the router commits deliveries and skips in
        one transaction, so two reads outside one would see half of it (skips, no rows)."""
        async with (
            self.storage.db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn


#: channel order within one event and recipient (the order the router plans them in)
CHANNEL_ORDER = {ch.value: i for i, ch in enumerate(Channel)}
DELIVERY_COPY_COLUMNS = [
    "event_id",
    "user_id",
    "channel",
    "notification_id",
    "priority",
    "state",
    "reason",
    "detail",
    "batch_key",
    "not_before",
    "created_at",
    "updated_at",
]


def skipped_delivery(row: asyncpg.Record, channel: str) -> dict[str, Any]:
    """One recipient's skipped delivery on one channel, from a compact `delivery_skips` row.
    Its id is negative (-(row id * 8 + channel index)): no `deliveries` row stands behind it."""
    reason, detail = row["skips"][channel]
    at = row["created_at"].isoformat()
    return {
        "id": -(row["id"] * 8 + CHANNEL_ORDER[channel]),
        "event_id": str(row["event_id"]),
        "user_id": row["recipient"],
        "channel": channel,
        "priority": row["priority"],
        "state": "skipped",
        "reason": reason,
        "detail": detail,
        "attempts": 0,
        "not_before": None,
        "provider_id": None,
        "created_at": at,
        "updated_at": at,
        "sent_at": None,
    }


def _ordered(
    rows: list[asyncpg.Record],
    skipped: list[asyncpg.Record],
    *,
    by_user: bool = False,
    by_time: bool = False,
) -> list[dict[str, Any]]:
    """The log rows and the compact skipped ones merged: by event (by recipient first for one
    event's log, by time first for a user's), then in channel order."""
    out = [delivery(r) for r in rows]
    out += [skipped_delivery(s, ch) for s in skipped for ch in s["skips"]]
    out.sort(
        key=lambda d: (
            d["user_id"] if by_user else "",
            d["created_at"] if by_time else "",
            d["event_id"],
            CHANNEL_ORDER[d["channel"]],
        )
    )
    return out
