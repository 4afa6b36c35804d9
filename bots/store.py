"""The bot's SQL: links and link codes, blocked chats, once-markers, the users seen on the bus,
node heartbeats, and the read queries over the event log that the commands and the brief use.

Every time window is passed in (the feature's clock), never taken from the database's now().
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from server.personal_data import Erasure, records
from server.storage import Store

HOURS_TYPES = ("hours.earned", "hours.tipped", "hours.spent")
REVENUE_TYPES = ("storefront.purchased", "storefront.membership_new")


@dataclass(frozen=True, slots=True)
class Link:
    user_id: str
    chat_id: int
    role: str
    tz: str
    alerts: bool
    linked_at: datetime
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Money:
    currency: str
    cents: int
    purchases: int
    memberships: int


@dataclass(frozen=True, slots=True)
class TrendingRow:
    content_id: str
    score: float
    counts: dict[str, int]
    title: str | None = None
    creator_id: str | None = None
    kind: str | None = None


def _link(row: Any) -> Link:
    return Link(
        user_id=row["user_id"],
        chat_id=int(row["chat_id"]),
        role=row["role"],
        tz=row["tz"],
        alerts=bool(row["alerts"]),
        linked_at=row["linked_at"],
        blocked=bool(row["blocked"]),
    )


_LINK_COLUMNS = (
    "l.user_id, l.chat_id, l.role, l.tz, l.alerts, l.linked_at,"
    " (b.chat_id IS NOT NULL) AS blocked"
    " FROM telegram_links l LEFT JOIN telegram_blocked_chats b ON b.chat_id = l.chat_id"
)


class BotStore(Store):
    # -- a user's data (export and erasure; see server/personal_data.py) -------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        db = self.storage.db
        link = await db.fetchrow(
            "SELECT chat_id, role, tz, alerts, linked_at FROM telegram_links WHERE user_id = $1",
            user_id,
        )
        seen = await db.fetchrow(
            "SELECT first_seen, last_seen FROM bot_users WHERE user_id = $1", user_id
        )
        return {
            "telegram": records([link])[0] if link else None,
            "telegram_link_codes": records(
                await db.fetch(
                    "SELECT expires_at, used_at FROM telegram_link_codes WHERE user_id = $1",
                    user_id,
                )
            ),
            "daily_briefs_sent": records(
                await db.fetch(
                    "SELECT local_date, sent_at FROM bot_briefs_sent WHERE user_id = $1"
                    " ORDER BY local_date",
                    user_id,
                )
            ),
            "seen_on_the_bus": records([seen])[0] if seen else None,
        }

    async def erase_user(self, e: Erasure) -> list[int]:
        """The Telegram link, link codes, brief markers, `bot_users`, and the linked chat's
        blocked/alert markers. Returns the chats that were linked."""
        uid = e.user_id
        chats = [
            int(r["chat_id"])
            for r in await e.conn.fetch(
                "DELETE FROM telegram_links WHERE user_id = $1 RETURNING chat_id", uid
            )
        ]
        e.add("telegram_links", len(chats))
        for label, sql in (
            ("telegram_link_codes", "DELETE FROM telegram_link_codes WHERE user_id = $1"),
            ("bot_briefs_sent", "DELETE FROM bot_briefs_sent WHERE user_id = $1"),
            ("bot_users", "DELETE FROM bot_users WHERE user_id = $1"),
        ):
            await e.execute(label, sql, uid)
        if chats:
            await e.execute(
                "telegram_blocked_chats",
                "DELETE FROM telegram_blocked_chats WHERE chat_id = ANY($1)",
                chats,
            )
            await e.execute(
                "bot_alerts_sent", "DELETE FROM bot_alerts_sent WHERE chat_id = ANY($1)", chats
            )
        return chats

    # -- link codes and links ---------------------------------------------------------------

    async def add_code(
        self, code_hash: bytes, user_id: str, role: str, tz: str, expires_at: datetime
    ) -> None:
        await self.db.execute(
            "INSERT INTO telegram_link_codes (code_hash, user_id, role, tz, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            code_hash,
            user_id,
            role,
            tz,
            expires_at,
        )

    async def redeem_and_link(self, code_hash: bytes, chat_id: int, now: datetime) -> Link | None:
        """Use a valid code once and link its user to `chat_id` (moving the chat if it was
        linked to someone else); None when the code is unknown, used or expired."""
        async with self.db.acquire() as conn, conn.transaction():
            code = await conn.fetchrow(
                "UPDATE telegram_link_codes SET used_at = $2"
                " WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2"
                " RETURNING user_id, role, tz",
                code_hash,
                now,
            )
            if code is None:
                return None
            await conn.execute(
                "DELETE FROM telegram_links WHERE chat_id = $1 AND user_id <> $2",
                chat_id,
                code["user_id"],
            )
            await conn.execute(
                "INSERT INTO telegram_links (user_id, chat_id, role, tz, linked_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET"
                " chat_id = EXCLUDED.chat_id, role = EXCLUDED.role, tz = EXCLUDED.tz,"
                " linked_at = EXCLUDED.linked_at",
                code["user_id"],
                chat_id,
                code["role"],
                code["tz"],
                now,
            )
            await conn.execute("DELETE FROM telegram_blocked_chats WHERE chat_id = $1", chat_id)
            row = await conn.fetchrow(f"SELECT {_LINK_COLUMNS} WHERE l.chat_id = $1", chat_id)
        return _link(row)

    async def link_by_chat(self, chat_id: int) -> Link | None:
        row = await self.db.fetchrow(f"SELECT {_LINK_COLUMNS} WHERE l.chat_id = $1", chat_id)
        return _link(row) if row else None

    async def link_by_user(self, user_id: str) -> Link | None:
        row = await self.db.fetchrow(f"SELECT {_LINK_COLUMNS} WHERE l.user_id = $1", user_id)
        return _link(row) if row else None

    async def unlink_chat(self, chat_id: int) -> str | None:
        user_id = await self.db.fetchval(
            "DELETE FROM telegram_links WHERE chat_id = $1 RETURNING user_id", chat_id
        )
        return str(user_id) if user_id is not None else None

    async def unlink_user(self, user_id: str) -> bool:
        status = await self.db.execute("DELETE FROM telegram_links WHERE user_id = $1", user_id)
        return bool(status.endswith(" 1"))

    async def set_alerts(self, chat_id: int, on: bool) -> None:
        await self.db.execute(
            "UPDATE telegram_links SET alerts = $2 WHERE chat_id = $1", chat_id, on
        )

    async def admin_links(self) -> list[Link]:
        rows = await self.db.fetch(f"SELECT {_LINK_COLUMNS} WHERE l.role = 'admin'")
        return [_link(r) for r in rows]

    async def alert_chats(self) -> list[int]:
        """Chats of linked admins with alerts on that have not blocked the bot."""
        rows = await self.db.fetch(
            "SELECT l.chat_id FROM telegram_links l WHERE l.role = 'admin' AND l.alerts"
            " AND NOT EXISTS (SELECT 1 FROM telegram_blocked_chats b WHERE b.chat_id = l.chat_id)"
            " ORDER BY l.chat_id"
        )
        return [int(r["chat_id"]) for r in rows]

    async def chat_for_user(self, user_id: str) -> int | None:
        value = await self.db.fetchval(
            "SELECT l.chat_id FROM telegram_links l WHERE l.user_id = $1"
            " AND NOT EXISTS (SELECT 1 FROM telegram_blocked_chats b WHERE b.chat_id = l.chat_id)",
            user_id,
        )
        return int(value) if value is not None else None

    # -- blocked chats ----------------------------------------------------------------------

    async def block_chat(self, chat_id: int, reason: str) -> None:
        await self.db.execute(
            "INSERT INTO telegram_blocked_chats (chat_id, reason) VALUES ($1, $2)"
            " ON CONFLICT (chat_id) DO UPDATE SET reason = EXCLUDED.reason",
            chat_id,
            reason[:500],
        )

    async def unblock_chat(self, chat_id: int) -> bool:
        status = await self.db.execute(
            "DELETE FROM telegram_blocked_chats WHERE chat_id = $1", chat_id
        )
        return bool(status.endswith(" 1"))

    async def is_blocked(self, chat_id: int) -> bool:
        return bool(
            await self.db.fetchval(
                "SELECT 1 FROM telegram_blocked_chats WHERE chat_id = $1", chat_id
            )
        )

    # -- once-markers -----------------------------------------------------------------------

    async def claim_brief(self, user_id: str, local_date: date, chat_id: int) -> bool:
        status = await self.db.execute(
            "INSERT INTO bot_briefs_sent (user_id, local_date, chat_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            user_id,
            local_date,
            chat_id,
        )
        return bool(status.endswith(" 1"))

    async def release_brief(self, user_id: str, local_date: date) -> None:
        await self.db.execute(
            "DELETE FROM bot_briefs_sent WHERE user_id = $1 AND local_date = $2",
            user_id,
            local_date,
        )

    async def briefs_sent(self, user_id: str) -> list[date]:
        rows = await self.db.fetch(
            "SELECT local_date FROM bot_briefs_sent WHERE user_id = $1 ORDER BY local_date",
            user_id,
        )
        return [r["local_date"] for r in rows]

    async def claim_alert(self, key: str, chat_id: int, rule: str) -> bool:
        status = await self.db.execute(
            "INSERT INTO bot_alerts_sent (alert_key, chat_id, rule) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            key,
            chat_id,
            rule,
        )
        return bool(status.endswith(" 1"))

    async def release_alert(self, key: str, chat_id: int) -> None:
        await self.db.execute(
            "DELETE FROM bot_alerts_sent WHERE alert_key = $1 AND chat_id = $2", key, chat_id
        )

    # -- users seen on the bus --------------------------------------------------------------

    async def touch_users(self, user_ids: list[str], ts: datetime) -> None:
        if not user_ids:
            return
        await self.db.execute(
            "INSERT INTO bot_users (user_id, first_seen, last_seen)"
            " SELECT u, $2, $2 FROM unnest($1::text[]) AS u"
            " ON CONFLICT (user_id) DO UPDATE SET"
            " first_seen = least(bot_users.first_seen, EXCLUDED.first_seen),"
            " last_seen = greatest(bot_users.last_seen, EXCLUDED.last_seen)",
            sorted(set(user_ids)),
            ts,
        )

    async def user_counts(self, since: datetime, until: datetime) -> tuple[int, int, int]:
        """(users seen up to `until`, first seen in [since, until), active in [since, until))."""
        row = await self.db.fetchrow(
            "SELECT count(*) FILTER (WHERE first_seen < $2) AS total,"
            " count(*) FILTER (WHERE first_seen >= $1 AND first_seen < $2) AS new,"
            " count(*) FILTER (WHERE last_seen >= $1 AND first_seen < $2) AS active"
            " FROM bot_users",
            since,
            until,
        )
        return int(row["total"]), int(row["new"]), int(row["active"])

    # -- node heartbeats --------------------------------------------------------------------

    async def put_node_stats(
        self,
        node_id: str,
        connections: dict[str, int],
        users: int,
        requests: int,
        errors: int,
        now: datetime,
    ) -> None:
        await self.db.execute(
            "INSERT INTO bot_node_stats (node_id, connections, users, requests, errors,"
            " updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node_id) DO UPDATE SET"
            " connections = EXCLUDED.connections, users = EXCLUDED.users,"
            " requests = EXCLUDED.requests, errors = EXCLUDED.errors,"
            " updated_at = EXCLUDED.updated_at",
            node_id,
            connections,
            users,
            requests,
            errors,
            now,
        )

    async def other_node_stats(self, node_id: str, fresh_since: datetime) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM bot_node_stats WHERE node_id <> $1 AND updated_at >= $2",
            node_id,
            fresh_since,
        )
        return [dict(r) for r in rows]

    async def delete_node_stats(self, node_id: str) -> None:
        await self.db.execute("DELETE FROM bot_node_stats WHERE node_id = $1", node_id)

    async def prune(self, now: datetime) -> None:
        """Drop expired link codes, old alert markers and stale heartbeats."""
        await self.db.execute(
            "DELETE FROM telegram_link_codes WHERE expires_at < $1", now - timedelta(days=1)
        )
        await self.db.execute(
            "DELETE FROM bot_alerts_sent WHERE sent_at < $1", now - timedelta(days=7)
        )
        await self.db.execute(
            "DELETE FROM bot_node_stats WHERE updated_at < $1", now - timedelta(days=1)
        )

    # -- reads over the event log -----------------------------------------------------------

    async def revenue(self, since: datetime, until: datetime) -> list[Money]:
        rows = await self.db.fetch(
            "SELECT coalesce(payload->>'currency', 'USD') AS currency,"
            " count(*) FILTER (WHERE type = 'storefront.purchased') AS purchases,"
            " count(*) FILTER (WHERE type = 'storefront.membership_new') AS memberships,"
            " coalesce(sum((payload->>'amount_cents')::bigint), 0) AS cents"
            " FROM events WHERE type = ANY($1::text[]) AND ts >= $2 AND ts < $3"
            " GROUP BY 1 ORDER BY cents DESC, currency",
            list(REVENUE_TYPES),
            since,
            until,
        )
        return [
            Money(r["currency"], int(r["cents"]), int(r["purchases"]), int(r["memberships"]))
            for r in rows
        ]

    async def top_seller(self, since: datetime, until: datetime) -> tuple[str, str, int] | None:
        """(seller, currency, cents) with the most storefront revenue in the window."""
        row = await self.db.fetchrow(
            "SELECT coalesce(payload->>'seller_id', payload->>'creator_id') AS seller,"
            " coalesce(payload->>'currency', 'USD') AS currency,"
            " sum((payload->>'amount_cents')::bigint) AS cents"
            " FROM events WHERE type = ANY($1::text[]) AND ts >= $2 AND ts < $3"
            " AND payload ? 'amount_cents' GROUP BY 1, 2 ORDER BY cents DESC, seller LIMIT 1",
            list(REVENUE_TYPES),
            since,
            until,
        )
        if row is None or not row["cents"]:
            return None
        return row["seller"], row["currency"], int(row["cents"])

    async def hours_totals(
        self, since: datetime, until: datetime
    ) -> dict[str, tuple[int, Decimal]]:
        """{event type: (count, HOURS)} for hours.earned/tipped/spent in the window."""
        rows = await self.db.fetch(
            "SELECT type, count(*) AS n, coalesce(sum((payload->>'amount')::numeric), 0) AS amt"
            " FROM events WHERE type = ANY($1::text[]) AND ts >= $2 AND ts < $3 GROUP BY type",
            list(HOURS_TYPES),
            since,
            until,
        )
        out = {t: (0, Decimal(0)) for t in HOURS_TYPES}
        for r in rows:
            out[r["type"]] = (int(r["n"]), Decimal(r["amt"]))
        return out

    async def content_created(self, since: datetime, until: datetime) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT payload->>'kind' AS kind, count(*) AS n FROM events"
            " WHERE type = 'content.created' AND ts >= $1 AND ts < $2 GROUP BY 1",
            since,
            until,
        )
        return {r["kind"]: int(r["n"]) for r in rows}

    async def trending(
        self,
        now: datetime,
        weights: dict[str, float],
        *,
        window: timedelta,
        half_life_s: float,
        limit: int = 5,
    ) -> list[TrendingRow]:
        """Content ranked by weighted, time-decayed engagement events in the window."""
        types, ws = list(weights), [float(weights[t]) for t in weights]
        rows = await self.db.fetch(
            "WITH hits AS ("
            "  SELECT e.payload->>'content_id' AS cid, e.type,"
            "   w.weight * power(0.5, extract(epoch FROM ($1 - e.ts)) / $5) AS score"
            "  FROM events e JOIN unnest($2::text[], $3::float8[]) AS w(type, weight)"
            "    ON w.type = e.type"
            "  WHERE e.ts > $4 AND e.ts <= $1 AND e.payload ? 'content_id'),"
            " per_type AS (SELECT cid, type, count(*) AS n, sum(score) AS score"
            "  FROM hits GROUP BY cid, type)"
            " SELECT cid, sum(score) AS score, jsonb_object_agg(type, n) AS counts"
            " FROM per_type GROUP BY cid ORDER BY score DESC, cid LIMIT $6",
            now,
            types,
            ws,
            now - window,
            half_life_s,
            limit,
        )
        if not rows:
            return []
        info = await self.content_info([r["cid"] for r in rows])
        out = []
        for r in rows:
            title, creator, kind = info.get(r["cid"], (None, None, None))
            out.append(
                TrendingRow(
                    content_id=r["cid"],
                    score=float(r["score"]),
                    counts={k: int(v) for k, v in r["counts"].items()},
                    title=title,
                    creator_id=creator,
                    kind=kind,
                )
            )
        return out

    async def content_info(
        self, content_ids: list[str]
    ) -> dict[str, tuple[str | None, str | None, str | None]]:
        """content id -> (title, creator, kind) from its latest content.created event."""
        rows = await self.db.fetch(
            "SELECT DISTINCT ON (payload->>'content_id') payload->>'content_id' AS cid,"
            " payload->>'title' AS title, payload->>'creator_id' AS creator,"
            " payload->>'kind' AS kind FROM events"
            " WHERE type = 'content.created' AND payload->>'content_id' = ANY($1::text[])"
            " ORDER BY payload->>'content_id', ts DESC",
            content_ids,
        )
        return {r["cid"]: (r["title"], r["creator"], r["kind"]) for r in rows}

    async def top_earner(self, since: datetime, until: datetime) -> tuple[str, Decimal] | None:
        """The user with the most HOURS earned plus tips received in the window."""
        row = await self.db.fetchrow(
            "SELECT uid, sum(amt) AS total FROM ("
            "  SELECT payload->>'user_id' AS uid, (payload->>'amount')::numeric AS amt"
            "  FROM events WHERE type = 'hours.earned' AND ts >= $1 AND ts < $2"
            "  UNION ALL"
            "  SELECT payload->>'to_user', (payload->>'amount')::numeric"
            "  FROM events WHERE type = 'hours.tipped' AND ts >= $1 AND ts < $2"
            ") x WHERE uid IS NOT NULL GROUP BY uid ORDER BY total DESC, uid LIMIT 1",
            since,
            until,
        )
        return (row["uid"], Decimal(row["total"])) if row else None

    async def hours_account(self, user_id: str) -> dict[str, Decimal]:
        """A user's lifetime HOURS from the event log: earned, tips in/out, spent."""
        row = await self.db.fetchrow(
            "SELECT"
            " coalesce(sum(amt) FILTER (WHERE type = 'hours.earned'"
            "   AND payload->>'user_id' = $1), 0) AS earned,"
            " coalesce(sum(amt) FILTER (WHERE type = 'hours.tipped'"
            "   AND payload->>'to_user' = $1), 0) AS tips_in,"
            " coalesce(sum(amt) FILTER (WHERE type = 'hours.tipped'"
            "   AND payload->>'from_user' = $1), 0) AS tips_out,"
            " coalesce(sum(amt) FILTER (WHERE type = 'hours.spent'"
            "   AND payload->>'user_id' = $1), 0) AS spent"
            " FROM (SELECT type, payload, (payload->>'amount')::numeric AS amt FROM events"
            "  WHERE type = ANY($2::text[]) AND (payload->>'user_id' = $1"
            "   OR payload->>'to_user' = $1 OR payload->>'from_user' = $1)) x",
            user_id,
            list(HOURS_TYPES),
        )
        return {k: Decimal(row[k]) for k in ("earned", "tips_in", "tips_out", "spent")}
