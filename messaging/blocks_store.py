"""SQL of blocks (`user_blocks`, one row per direction) and conversation mutes
(`conversation_mutes`, one row per member who muted; gone with the membership), migration 0011.

Methods that take part in a caller's transaction take its connection first (`conn`; the pool,
`db`, where a read may run alone)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from messaging.store import Conn
from server.personal_data import Erasure, records
from server.storage import Store

#: a block between $1 and $2, in either direction
_BETWEEN = (
    "(b.blocker_id = $1 AND b.blocked_id = {other})"
    " OR (b.blocker_id = {other} AND b.blocked_id = $1)"
)


class BlocksStore(Store):
    # -- blocks -------------------------------------------------------------------------------

    async def block(self, blocker: str, blocked: str) -> bool:
        """True when the block is new."""
        status = await self.db.execute(
            "INSERT INTO user_blocks (blocker_id, blocked_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            blocker,
            blocked,
        )
        return bool(status.endswith(" 1"))

    async def unblock(self, blocker: str, blocked: str) -> bool:
        """True when there was a block to lift."""
        status = await self.db.execute(
            "DELETE FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker, blocked
        )
        return bool(status.endswith(" 1"))

    async def blocked_by(self, blocker: str, limit: int) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT blocked_id, created_at FROM user_blocks WHERE blocker_id = $1"
            " ORDER BY created_at DESC, blocked_id LIMIT $2",
            blocker,
            limit,
        )

    async def between(self, conn: Conn, user_id: str, other: str) -> bool:
        """A block between the two, in either direction."""
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM user_blocks b WHERE "
                + _BETWEEN.format(other="$2")
                + ")",
                user_id,
                other,
            )
        )

    async def among(self, conn: Conn, user_id: str, others: list[str]) -> set[str]:
        """Which of `others` have a block with `user_id`, in either direction."""
        if not others:
            return set()
        rows = await conn.fetch(
            "SELECT CASE WHEN b.blocker_id = $1 THEN b.blocked_id ELSE b.blocker_id END AS other"
            " FROM user_blocks b WHERE (b.blocker_id = $1 AND b.blocked_id = ANY($2::text[]))"
            " OR (b.blocked_id = $1 AND b.blocker_id = ANY($2::text[]))",
            user_id,
            others,
        )
        return {r["other"] for r in rows}

    async def blocked_pairs(self, conn: Conn, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (user, other) pairs have a block between them, either direction."""
        if not pairs:
            return set()
        rows = await conn.fetch(
            "SELECT DISTINCT p.a, p.b FROM unnest($1::text[], $2::text[]) AS p(a, b)"
            " JOIN user_blocks b ON (b.blocker_id = p.a AND b.blocked_id = p.b)"
            " OR (b.blocker_id = p.b AND b.blocked_id = p.a)",
            [a for a, _ in pairs],
            [b for _, b in pairs],
        )
        return {(r["a"], r["b"]) for r in rows}

    async def in_direct(self, conn: Conn, conv_id: str, user_id: str) -> bool:
        """`conv_id` is a direct conversation and there is a block between its two members."""
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM conversations c JOIN conversation_members m"
                "  ON m.conversation_id = c.id AND m.user_id <> $1"
                " JOIN user_blocks b ON "
                + _BETWEEN.format(other="m.user_id")
                + " WHERE c.id = $2 AND c.kind = 'direct')",
                user_id,
                conv_id,
            )
        )

    async def hidden_in(self, conv_id: str, user_id: str) -> set[str]:
        """The members of `conv_id` there is a block with `user_id` with (either direction)."""
        rows = await self.db.fetch(
            "SELECT m.user_id FROM conversation_members m JOIN user_blocks b ON "
            + _BETWEEN.format(other="m.user_id")
            + " WHERE m.conversation_id = $2 AND m.user_id <> $1",
            user_id,
            conv_id,
        )
        return {r["user_id"] for r in rows}

    # -- mutes --------------------------------------------------------------------------------

    async def mute(
        self, conn: asyncpg.Connection, conv_id: str, user_id: str, until: datetime | None
    ) -> None:
        await conn.execute(
            "INSERT INTO conversation_mutes (conversation_id, user_id, until) VALUES ($1, $2, $3)"
            " ON CONFLICT (conversation_id, user_id) DO UPDATE SET until = EXCLUDED.until,"
            " created_at = now()",
            conv_id,
            user_id,
            until,
        )

    async def unmute(self, conn: asyncpg.Connection, conv_id: str, user_id: str) -> None:
        await conn.execute(
            "DELETE FROM conversation_mutes WHERE conversation_id = $1 AND user_id = $2",
            conv_id,
            user_id,
        )

    async def muted_in(self, conv_id: str, now: datetime) -> list[str]:
        """The members who have the conversation muted at `now`."""
        rows = await self.db.fetch(
            "SELECT user_id FROM conversation_mutes WHERE conversation_id = $1"
            " AND (until IS NULL OR until > $2) ORDER BY user_id",
            conv_id,
            now,
        )
        return [r["user_id"] for r in rows]

    async def muted_in_many(self, conv_ids: list[str], now: datetime) -> dict[str, list[str]]:
        """conversation id -> the members who have it muted at `now` (only those with any)."""
        rows = await self.db.fetch(
            "SELECT conversation_id, user_id FROM conversation_mutes"
            " WHERE conversation_id = ANY($1::uuid[]) AND (until IS NULL OR until > $2)"
            " ORDER BY user_id",
            conv_ids,
            now,
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(str(r["conversation_id"]), []).append(r["user_id"])
        return out

    async def mutes_of(self, user_id: str, now: datetime) -> dict[str, datetime | None]:
        """The user's mutes in force at `now`: conversation -> until (None: until unmuted)."""
        rows = await self.db.fetch(
            "SELECT conversation_id, until FROM conversation_mutes WHERE user_id = $1"
            " AND (until IS NULL OR until > $2)",
            user_id,
            now,
        )
        return {str(r["conversation_id"]): r["until"] for r in rows}

    # -- a user's data (export and erasure; see server/personal_data.py) -----------------------

    async def export_user(self, user_id: str) -> dict[str, list[dict[str, object]]]:
        """Both directions of their blocks, and every mute row of theirs (also lapsed ones)."""
        made = await self.db.fetch(
            "SELECT blocked_id AS user_id, created_at FROM user_blocks WHERE blocker_id = $1"
            " ORDER BY created_at, blocked_id",
            user_id,
        )
        against = await self.db.fetch(
            "SELECT blocker_id AS user_id, created_at FROM user_blocks WHERE blocked_id = $1"
            " ORDER BY created_at, blocker_id",
            user_id,
        )
        mutes = await self.db.fetch(
            "SELECT conversation_id, until, created_at FROM conversation_mutes"
            " WHERE user_id = $1 ORDER BY created_at, conversation_id",
            user_id,
        )
        return {"blocked": records(made), "blocked_by": records(against), "mutes": records(mutes)}

    async def erase_user(self, e: Erasure) -> None:
        """Blocks in both directions and their mutes go (before their memberships do)."""
        await e.execute(
            "user_blocks",
            "DELETE FROM user_blocks WHERE blocker_id = $1 OR blocked_id = $1",
            e.user_id,
        )
        await e.execute(
            "conversation_mutes", "DELETE FROM conversation_mutes WHERE user_id = $1", e.user_id
        )
