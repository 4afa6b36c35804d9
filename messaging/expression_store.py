"""SQL of what a conversation shows around its messages: reactions (`message_reactions`,
migration 0012), the messages replies quote, and who has seen or got a message (the members'
cursors). Methods that take part in a caller's transaction take its connection first."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from messaging.store import Conn
from server.personal_data import Erasure, records
from server.storage import Store


class ExpressionStore(Store):
    # -- reactions ----------------------------------------------------------------------------

    async def message_for_reaction(
        self, conn: asyncpg.Connection, conv_id: str, msg_id: str
    ) -> asyncpg.Record | None:
        """The message, locked against a concurrent reaction or delete until commit (so the
        cap on distinct emoji holds and a deleted message gets none)."""
        return await conn.fetchrow(
            "SELECT id, seq, sender_id, deleted_at FROM messages"
            " WHERE conversation_id = $1 AND id = $2 FOR NO KEY UPDATE",
            conv_id,
            msg_id,
        )

    async def emoji_of(self, conn: asyncpg.Connection, msg_id: str) -> set[str]:
        """The distinct emoji on a message."""
        rows = await conn.fetch(
            "SELECT DISTINCT emoji FROM message_reactions WHERE message_id = $1", msg_id
        )
        return {r["emoji"] for r in rows}

    async def add_reaction(
        self, conn: asyncpg.Connection, msg_id: str, user_id: str, emoji: str
    ) -> bool:
        """True when the reaction is new (a second one with the same emoji changes nothing)."""
        status = await conn.execute(
            "INSERT INTO message_reactions (message_id, user_id, emoji) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            msg_id,
            user_id,
            emoji,
        )
        return bool(status.endswith(" 1"))

    async def remove_reaction(
        self, conn: asyncpg.Connection, msg_id: str, user_id: str, emoji: str
    ) -> bool:
        status = await conn.execute(
            "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
            msg_id,
            user_id,
            emoji,
        )
        return bool(status.endswith(" 1"))

    async def reactions(
        self, conn: Conn, msg_ids: list[str], user_id: str | None = None
    ) -> dict[str, tuple[dict[str, int], list[str]]]:
        """For each message that has reactions: {emoji: count} (first reacted first) and the
        emoji `user_id` reacted with. One query for all of `msg_ids`."""
        if not msg_ids:
            return {}
        rows = await conn.fetch(
            "SELECT message_id, emoji, count(*) AS n, bool_or(user_id = $2) AS mine"
            " FROM message_reactions WHERE message_id = ANY($1::uuid[])"
            " GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji",
            msg_ids,
            user_id,
        )
        out: dict[str, tuple[dict[str, int], list[str]]] = defaultdict(lambda: ({}, []))
        for r in rows:
            counts, mine = out[str(r["message_id"])]
            counts[r["emoji"]] = int(r["n"])
            if r["mine"]:
                mine.append(r["emoji"])
        return dict(out)

    async def forget_message(self, conn: asyncpg.Connection, msg_id: str) -> int:
        """A deleted message's reactions go with its body."""
        status = await conn.execute("DELETE FROM message_reactions WHERE message_id = $1", msg_id)
        return int(status.rsplit(" ", 1)[-1])

    # -- quoted messages --------------------------------------------------------------------

    async def quoted(self, conn: Conn, conv_id: str, msg_ids: list[str]) -> list[asyncpg.Record]:
        """The messages of this conversation with these ids (those a page's replies quote), in
        one query."""
        if not msg_ids:
            return []
        return await conn.fetch(
            "SELECT id, seq, sender_id, kind, body, deleted_at FROM messages"
            " WHERE conversation_id = $1 AND id = ANY($2::uuid[])",
            conv_id,
            msg_ids,
        )

    # -- seen by ------------------------------------------------------------------------------

    async def message_at(self, conv_id: str, seq: int) -> asyncpg.Record | None:
        return await self.db.fetchrow(
            "SELECT id, seq, sender_id FROM messages WHERE conversation_id = $1 AND seq = $2",
            conv_id,
            seq,
        )

    async def cursors_past(self, conv_id: str, seq: int, sender_id: str) -> list[asyncpg.Record]:
        """The members who could see message `seq` (joined before it), but its sender, with
        their cursors; furthest read first."""
        return await self.db.fetch(
            "SELECT user_id, delivered_seq, read_seq FROM conversation_members"
            " WHERE conversation_id = $1 AND joined_seq < $2 AND user_id <> $3"
            " ORDER BY read_seq DESC, delivered_seq DESC, user_id",
            conv_id,
            seq,
            sender_id,
        )

    # -- a user's data (export, erasure; see server/personal_data.py) -----------------------

    async def export_user(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT m.conversation_id, r.message_id, m.seq, r.emoji, r.created_at"
            " FROM message_reactions r JOIN messages m ON m.id = r.message_id"
            " WHERE r.user_id = $1 ORDER BY r.created_at, r.message_id, r.emoji",
            user_id,
        )
        return records(rows)

    async def erase_user(self, e: Erasure) -> None:
        """Their reactions go, and every reaction on the messages they sent (which the erasure
        tombstones next: `MessagingStore.erase_user`)."""
        await e.execute(
            "message_reactions",
            "DELETE FROM message_reactions r USING messages m WHERE m.id = r.message_id"
            " AND (r.user_id = $1 OR m.sender_id = $1)",
            e.user_id,
        )
