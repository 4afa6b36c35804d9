"""SQL of messaging: conversations and their members, messages (sealed bodies; see
messaging/keys.py) with the members' delivered/read cursors, and the conversations' wrapped data
keys. Scheduled notes keep theirs beside it (messaging/notes_store.py).

Methods that take part in a caller's transaction take its connection first (`conn`; a read that
may also run alone takes the pool, `db`, there); the others run on the pool themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias

import asyncpg

from server.personal_data import Erasure
from server.storage import Store

Conn: TypeAlias = Any  # an asyncpg Connection (in a transaction) or the pool

#: what a receipt moves: the member's delivered cursor, or the read one (read implies delivered)
Receipt = Literal["delivered", "read"]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A row `insert_messages` writes (its body sealed already)."""

    id: str
    conversation_id: str
    seq: int
    sender_id: str
    client_msg_id: str
    kind: str
    body: bytes
    reply_to: str | None


_ADVANCE: dict[Receipt, str] = {
    "delivered": "delivered_seq = GREATEST(delivered_seq, $3)",
    "read": "read_seq = GREATEST(read_seq, $3), delivered_seq = GREATEST(delivered_seq, $3)",
}


class MessagingStore(Store):
    # -- conversations and members --------------------------------------------------------

    async def conversation(
        self, conn: Conn, conv_id: str, *, lock: bool = False
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM conversations WHERE id = $1" + (" FOR UPDATE" if lock else ""), conv_id
        )

    async def direct_by_pair(self, conn: Conn, pair_key: str) -> asyncpg.Record | None:
        return await conn.fetchrow("SELECT * FROM conversations WHERE pair_key = $1", pair_key)

    async def insert_conversation(
        self,
        conn: asyncpg.Connection,
        conv_id: str,
        kind: str,
        title: str | None,
        owner_id: str | None,
        pair_key: str | None,
        wrapped_key: bytes,
        key_id: str,
    ) -> asyncpg.Record | None:
        """Insert; None when a direct conversation for this pair appeared meanwhile."""
        return await conn.fetchrow(
            "INSERT INTO conversations (id, kind, title, owner_id, pair_key, wrapped_key, key_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (pair_key) DO NOTHING RETURNING *",
            conv_id,
            kind,
            title,
            owner_id,
            pair_key,
            wrapped_key,
            key_id,
        )

    async def hand_over(self, conn: asyncpg.Connection, conv_id: str, owner_id: str) -> None:
        """Make `owner_id` (a member) the circle's owner."""
        await conn.execute(
            "UPDATE conversations SET owner_id = $2 WHERE id = $1", conv_id, owner_id
        )
        await conn.execute(
            "UPDATE conversation_members SET role = 'owner'"
            " WHERE conversation_id = $1 AND user_id = $2",
            conv_id,
            owner_id,
        )

    async def add_members(
        self,
        conn: asyncpg.Connection,
        conv_id: str,
        members: list[tuple[str, str]],
        joined_seq: int = 0,
    ) -> None:
        await conn.executemany(
            "INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq,"
            " delivered_seq, read_seq) VALUES ($1, $2, $3, $4, $4, $4) ON CONFLICT DO NOTHING",
            [(conv_id, uid, role, joined_seq) for uid, role in members],
        )

    async def remove_member(self, conn: asyncpg.Connection, conv_id: str, user_id: str) -> bool:
        status = await conn.execute(
            "DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
            conv_id,
            user_id,
        )
        return bool(status.endswith(" 1"))

    async def member(
        self, conn: Conn, conv_id: str, user_id: str, *, lock_conversation: bool = False
    ) -> asyncpg.Record | None:
        """The membership; with `lock_conversation` the conversation row is locked too (as
        taking its next seq does), so what is checked next cannot change until commit."""
        if not lock_conversation:
            return await conn.fetchrow(
                "SELECT * FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
                conv_id,
                user_id,
            )
        return await conn.fetchrow(
            "SELECT m.* FROM conversation_members m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE m.conversation_id = $1 AND m.user_id = $2"
            " FOR NO KEY UPDATE OF c",
            conv_id,
            user_id,
        )

    async def member_ids(self, conn: asyncpg.Connection, conv_id: str) -> list[str]:
        rows = await conn.fetch(
            "SELECT user_id FROM conversation_members WHERE conversation_id = $1"
            " ORDER BY joined_at",
            conv_id,
        )
        return [r["user_id"] for r in rows]

    async def member_count(self, conn: asyncpg.Connection, conv_id: str) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM conversation_members WHERE conversation_id = $1", conv_id
            )
        )

    async def conversation_ids_of(self, user_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT conversation_id FROM conversation_members WHERE user_id = $1", user_id
        )
        return [str(r["conversation_id"]) for r in rows]

    async def list_for_user(self, user_id: str, limit: int) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT c.id, c.kind, c.title, c.owner_id, c.last_seq, c.wrapped_key,"
            "  m.read_seq, m.joined_seq,"
            "  (SELECT array_agg(user_id ORDER BY joined_at) FROM conversation_members x"
            "     WHERE x.conversation_id = c.id) AS members,"
            "  (SELECT count(*) FROM messages g WHERE g.conversation_id = c.id"
            "     AND g.seq > m.read_seq AND g.sender_id <> $1 AND g.deleted_at IS NULL)"
            "   AS unread,"
            "  l.id AS last_id, l.seq AS last_msg_seq, l.sender_id AS last_sender,"
            "  l.body AS last_body, l.kind AS last_kind, l.created_at AS last_at,"
            "  l.deleted_at AS last_deleted, l.tip_amount AS last_tip,"
            "  (SELECT array_agg(a.kind ORDER BY a.position) FROM message_attachments a"
            "     WHERE a.message_id = l.id) AS last_attachments"
            " FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id"
            " LEFT JOIN LATERAL (SELECT * FROM messages g WHERE g.conversation_id = c.id"
            "   AND g.seq > m.joined_seq ORDER BY g.seq DESC LIMIT 1) l ON true"
            " WHERE m.user_id = $1 ORDER BY COALESCE(l.created_at, c.created_at) DESC LIMIT $2",
            user_id,
            limit,
        )

    # -- messages and cursors ---------------------------------------------------------------

    async def next_seq(self, conn: asyncpg.Connection, conv_id: str) -> int:
        """Take the next gap-free sequence number (row lock until the transaction ends)."""
        return int(
            await conn.fetchval(
                "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
                conv_id,
            )
        )

    async def message_by_client_id(
        self, conn: asyncpg.Connection, conv_id: str, sender_id: str, client_msg_id: str
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM messages WHERE conversation_id = $1 AND sender_id = $2"
            " AND client_msg_id = $3",
            conv_id,
            sender_id,
            client_msg_id,
        )

    async def insert_message(
        self,
        conn: asyncpg.Connection,
        msg_id: str,
        conv_id: str,
        seq: int,
        sender_id: str,
        client_msg_id: str,
        kind: str,
        body: bytes | None,
        reply_to: str | None,
        tip_amount: Decimal | None = None,
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, kind,"
            " body, reply_to, tip_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " RETURNING *",
            msg_id,
            conv_id,
            seq,
            sender_id,
            client_msg_id,
            kind,
            body,
            reply_to,
            tip_amount,
        )
        assert row is not None
        return row

    # -- batched sends (messaging/messages.py `Messages._send_batch`) --------------------------

    async def conversations(self, conn: Conn, conv_ids: list[str]) -> dict[str, asyncpg.Record]:
        """id -> (kind, last_seq) of those of `conv_ids` that exist."""
        rows = await conn.fetch(
            "SELECT id, kind, last_seq FROM conversations WHERE id = ANY($1::uuid[])", conv_ids
        )
        return {str(r["id"]): r for r in rows}

    async def lock_conversations(
        self, conn: asyncpg.Connection, conv_ids: list[str]
    ) -> dict[str, asyncpg.Record]:
        """Lock these conversations' rows (in id order, so two batches never deadlock) until
        the transaction ends; id -> (kind, last_seq, wrapped_key) of those that exist."""
        rows = await conn.fetch(
            "SELECT id, kind, last_seq, wrapped_key FROM conversations"
            " WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE",
            conv_ids,
        )
        return {str(r["id"]): r for r in rows}

    async def members_of(self, conn: Conn, conv_ids: list[str]) -> dict[str, list[str]]:
        """conversation id -> its members' ids, longest-standing first."""
        rows = await conn.fetch(
            "SELECT conversation_id, user_id FROM conversation_members"
            " WHERE conversation_id = ANY($1::uuid[]) ORDER BY joined_at",
            conv_ids,
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(str(r["conversation_id"]), []).append(r["user_id"])
        return out

    async def messages_by_client_ids(
        self, conn: asyncpg.Connection, keys: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], asyncpg.Record]:
        """The messages already posted under these (conversation, sender, client_msg_id)."""
        if not keys:
            return {}
        rows = await conn.fetch(
            "SELECT g.* FROM messages g JOIN unnest($1::uuid[], $2::text[], $3::text[])"
            " AS k(conversation_id, sender_id, client_msg_id)"
            " ON g.conversation_id = k.conversation_id AND g.sender_id = k.sender_id"
            " AND g.client_msg_id = k.client_msg_id",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
        )
        return {(str(r["conversation_id"]), r["sender_id"], r["client_msg_id"]): r for r in rows}

    async def conversations_of_messages(
        self, conn: asyncpg.Connection, msg_ids: list[str]
    ) -> dict[str, str]:
        """message id -> its conversation id, for those of `msg_ids` that exist."""
        if not msg_ids:
            return {}
        rows = await conn.fetch(
            "SELECT id, conversation_id FROM messages WHERE id = ANY($1::uuid[])", msg_ids
        )
        return {str(r["id"]): str(r["conversation_id"]) for r in rows}

    async def insert_messages(
        self, conn: asyncpg.Connection, rows: list[NewMessage]
    ) -> list[asyncpg.Record]:
        """Insert many text messages in one statement; their rows, in the order given."""
        if not rows:
            return []
        got = await conn.fetch(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, kind,"
            " body, reply_to)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[],"
            " $6::text[], $7::bytea[], $8::uuid[]) RETURNING *",
            [r.id for r in rows],
            [r.conversation_id for r in rows],
            [r.seq for r in rows],
            [r.sender_id for r in rows],
            [r.client_msg_id for r in rows],
            [r.kind for r in rows],
            [r.body for r in rows],
            [r.reply_to for r in rows],
        )
        by_id = {str(r["id"]): r for r in got}
        return [by_id[r.id] for r in rows]

    async def set_last_seqs(self, conn: asyncpg.Connection, last: dict[str, int]) -> None:
        """Move the (locked) conversations' `last_seq` to what a batch took."""
        if last:
            await conn.execute(
                "UPDATE conversations c SET last_seq = x.seq"
                " FROM unnest($1::uuid[], $2::bigint[]) AS x(id, seq) WHERE c.id = x.id",
                list(last),
                list(last.values()),
            )

    async def message(
        self, conn: asyncpg.Connection, conv_id: str, msg_id: str, *, lock: bool = False
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM messages WHERE conversation_id = $1 AND id = $2"
            + (" FOR UPDATE" if lock else ""),
            conv_id,
            msg_id,
        )

    async def history(
        self, conv_id: str, after_seq: int, before_seq: int | None, limit: int
    ) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT * FROM messages WHERE conversation_id = $1 AND seq > $2"
            " AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
            conv_id,
            after_seq,
            before_seq,
            limit,
        )

    async def update_body(
        self, conn: asyncpg.Connection, msg_id: str, body: bytes
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            "UPDATE messages SET body = $2, edited_at = now() WHERE id = $1 RETURNING *",
            msg_id,
            body,
        )
        assert row is not None
        return row

    async def tombstone(self, conn: asyncpg.Connection, msg_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(
            "UPDATE messages SET body = NULL, deleted_at = now() WHERE id = $1 RETURNING *",
            msg_id,
        )
        assert row is not None
        return row

    async def advance_cursor(
        self, conv_id: str, user_id: str, receipt: Receipt, seq: int
    ) -> dict[Receipt, int] | None:
        """Move the member's cursor forward (never back); the cursors after, or None when
        they are not a member."""
        row = await self.db.fetchrow(
            f"UPDATE conversation_members SET {_ADVANCE[receipt]}"
            " WHERE conversation_id = $1 AND user_id = $2 RETURNING delivered_seq, read_seq",
            conv_id,
            user_id,
            seq,
        )
        if row is None:
            return None
        return {"delivered": row["delivered_seq"], "read": row["read_seq"]}

    async def advance_cursors(
        self, conn: asyncpg.Connection, moves: dict[tuple[str, str], tuple[int, int]]
    ) -> dict[tuple[str, str], dict[Receipt, int]]:
        """`advance_cursor` for many members at once: (conversation, user) -> (delivered, read)
        to move to (0: not moved); the cursors after, for those who are members."""
        if not moves:
            return {}
        rows = await conn.fetch(
            "UPDATE conversation_members m SET delivered_seq = GREATEST(m.delivered_seq, x.d),"
            " read_seq = GREATEST(m.read_seq, x.r)"
            " FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[]) AS x(c, u, d, r)"
            " WHERE m.conversation_id = x.c AND m.user_id = x.u"
            " RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq",
            [c for c, _ in moves],
            [u for _, u in moves],
            [d for d, _ in moves.values()],
            [r for _, r in moves.values()],
        )
        return {
            (str(r["conversation_id"]), r["user_id"]): {
                "delivered": r["delivered_seq"],
                "read": r["read_seq"],
            }
            for r in rows
        }

    async def unread_many(
        self, conn: Conn, members: list[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """`unread` for many (conversation, user) at once."""
        if not members:
            return {}
        rows = await conn.fetch(
            "SELECT x.c, x.u, (SELECT count(*) FROM messages g WHERE g.conversation_id = x.c"
            "  AND g.seq > m.read_seq AND g.sender_id <> x.u AND g.deleted_at IS NULL) AS n"
            " FROM unnest($1::uuid[], $2::text[]) AS x(c, u)"
            " JOIN conversation_members m ON m.conversation_id = x.c AND m.user_id = x.u",
            [c for c, _ in members],
            [u for _, u in members],
        )
        return {(str(r["c"]), r["u"]): int(r["n"]) for r in rows}

    async def unread(self, conv_id: str, user_id: str) -> int:
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM messages g JOIN conversation_members m"
                " ON m.conversation_id = g.conversation_id AND m.user_id = $2"
                " WHERE g.conversation_id = $1 AND g.seq > m.read_seq AND g.sender_id <> $2"
                " AND g.deleted_at IS NULL",
                conv_id,
                user_id,
            )
        )

    # -- data keys ----------------------------------------------------------------------------

    async def wrapped_keys(self) -> list[asyncpg.Record]:
        return await self.db.fetch("SELECT id, wrapped_key, key_id FROM conversations")

    async def rewrap(self, conv_id: str, wrapped: bytes, key_id: str) -> None:
        await self.db.execute(
            "UPDATE conversations SET wrapped_key = $2, key_id = $3 WHERE id = $1",
            conv_id,
            wrapped,
            key_id,
        )

    # -- a user's data (erasure; see server/personal_data.py) ----------------------------------

    async def erase_user(self, e: Erasure) -> None:
        """Circles they own pass to the longest-standing other member (as conversation:leave
        does); their memberships go, and conversations left without members; direct pair keys
        and the messages they sent are anonymized (tombstoned). Their notes go first
        (`NotesStore.erase_user`)."""
        conn, uid, ps = e.conn, e.user_id, e.pseudonym
        owned = await conn.fetch(
            "UPDATE conversations c SET owner_id = (SELECT m.user_id FROM conversation_members m"
            "  WHERE m.conversation_id = c.id AND m.user_id <> $1"
            "  ORDER BY m.joined_at, m.user_id LIMIT 1)"
            " WHERE c.owner_id = $1 RETURNING c.id",
            uid,
        )
        if owned:
            await conn.execute(
                "UPDATE conversation_members m SET role = 'owner' FROM conversations c"
                " WHERE c.id = m.conversation_id AND c.id = ANY($1::uuid[])"
                " AND m.user_id = c.owner_id",
                [r["id"] for r in owned],
            )
        left = [
            r["conversation_id"]
            for r in await conn.fetch(
                "DELETE FROM conversation_members WHERE user_id = $1 RETURNING conversation_id",
                uid,
            )
        ]
        e.add("conversation_members", len(left))
        await e.execute(
            "conversations (left empty)",
            "DELETE FROM conversations c WHERE c.id = ANY($1::uuid[]) AND NOT EXISTS"
            " (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id)",
            left,
        )
        await e.execute(
            "conversations (pair keys)",
            "UPDATE conversations SET pair_key = array_to_string(privacy_erase_idents("
            "  string_to_array(pair_key, '|'), $1, $2), '|')"
            " WHERE $1 = ANY(string_to_array(pair_key, '|'))",
            uid,
            ps,
        )
        await e.execute(
            "messages (tombstoned)",
            "UPDATE messages SET sender_id = $2, client_msg_id = 'erased:' || id::text,"
            " body = NULL, deleted_at = COALESCE(deleted_at, now()) WHERE sender_id = $1",
            uid,
            ps,
        )
