"""SQL of scheduled notes: a note is sealed like a message (messaging/keys.py) and sent once, by
the `message.scheduled` job, as a message of its conversation; its row keeps its state
(`scheduled`, `sent`, `cancelled`) and, once sent, the message it became."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from server.personal_data import Erasure
from server.storage import Store


def job_key(note_id: str) -> str:
    """The key of a note's job; also the `client_msg_id` of the message it becomes."""
    return f"note:{note_id}"


class NotesStore(Store):
    async def insert(
        self,
        conn: asyncpg.Connection,
        note_id: str,
        conv_id: str,
        sender_id: str,
        body: bytes,
        deliver_at: datetime,
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            "INSERT INTO scheduled_messages (id, conversation_id, sender_id, body, deliver_at)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING *",
            note_id,
            conv_id,
            sender_id,
            body,
            deliver_at,
        )
        assert row is not None
        return row

    async def note(
        self, conn: asyncpg.Connection, note_id: str, *, lock: bool = False
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM scheduled_messages WHERE id = $1" + (" FOR UPDATE" if lock else ""),
            note_id,
        )

    async def of_sender(self, sender_id: str, limit: int) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT s.*, (SELECT jsonb_agg(jsonb_build_object('user_id', m.user_id,"
            "   'delivered_seq', m.delivered_seq, 'read_seq', m.read_seq))"
            "   FROM conversation_members m WHERE m.conversation_id = s.conversation_id"
            "   AND m.user_id <> s.sender_id) AS recipients"
            " FROM scheduled_messages s WHERE s.sender_id = $1"
            " ORDER BY s.deliver_at DESC LIMIT $2",
            sender_id,
            limit,
        )

    async def set_state(
        self,
        conn: asyncpg.Connection,
        note_id: str,
        state: str,
        message_id: str | None = None,
        seq: int | None = None,
    ) -> None:
        await conn.execute(
            "UPDATE scheduled_messages SET state = $2, message_id = $3, seq = $4 WHERE id = $1",
            note_id,
            state,
            message_id,
            seq,
        )

    async def bodies(self, note_ids: list[str]) -> dict[str, asyncpg.Record]:
        rows = await self.db.fetch(
            "SELECT id, body, created_at FROM scheduled_messages WHERE id = ANY($1::uuid[])",
            note_ids,
        )
        return {str(r["id"]): r for r in rows}

    # -- a user's data (erasure; see server/personal_data.py) ----------------------------------

    async def erase_user(self, e: Erasure) -> None:
        """Their notes go, and the notes' jobs."""
        conn, uid = e.conn, e.user_id
        notes = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM scheduled_messages WHERE sender_id = $1", uid)
        ]
        if notes:
            await conn.execute(
                "DELETE FROM jobs WHERE key = ANY($1::text[])", [job_key(n) for n in notes]
            )
            await e.execute(
                "scheduled_messages", "DELETE FROM scheduled_messages WHERE sender_id = $1", uid
            )
