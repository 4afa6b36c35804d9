"""SQL of message attachments (`message_attachments`, migration 0013): the row made with the
upload URL, its binding to one message, its provider state, and its removal with the message,
the conversation or the uploader (each removal hands back what to delete at the provider)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from server.storage import Store

Conn = Any  # an asyncpg Connection (in a transaction) or the pool


class AttachmentsStore(Store):
    async def insert(
        self,
        att_id: str,
        *,
        conversation_id: str,
        uploader_id: str,
        kind: str,
        provider_uid: str,
        content_type: str,
        size_bytes: int,
        name: bytes | None,
        upload_expires_at: datetime,
    ) -> None:
        await self.db.execute(
            "INSERT INTO message_attachments (id, conversation_id, uploader_id, kind,"
            " provider_uid, content_type, size_bytes, name, upload_expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            att_id,
            conversation_id,
            uploader_id,
            kind,
            provider_uid,
            content_type,
            size_bytes,
            name,
            upload_expires_at,
        )

    async def locked(self, conn: asyncpg.Connection, ids: list[str]) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT * FROM message_attachments WHERE id = ANY($1::uuid[]) FOR UPDATE", ids
        )

    async def bind(self, conn: asyncpg.Connection, msg_id: str, ids: list[str]) -> None:
        """Bind these attachments to the message, in the order given."""
        await conn.execute(
            "UPDATE message_attachments a SET message_id = $1, position = x.pos"
            " FROM unnest($2::uuid[]) WITH ORDINALITY AS x(id, pos) WHERE a.id = x.id",
            msg_id,
            ids,
        )

    async def of_messages(self, conn: Conn, msg_ids: list[str]) -> list[asyncpg.Record]:
        return await conn.fetch(
            "SELECT * FROM message_attachments WHERE message_id = ANY($1::uuid[])"
            " ORDER BY message_id, position",
            msg_ids,
        )

    async def get(self, att_id: str) -> asyncpg.Record | None:
        """The attachment with its message's seq (null while it is in no message)."""
        return await self.db.fetchrow(
            "SELECT a.*, m.seq AS message_seq FROM message_attachments a"
            " LEFT JOIN messages m ON m.id = a.message_id WHERE a.id = $1",
            att_id,
        )

    async def set_state(
        self, conn: Conn, provider_uid: str, state: str, playback_url: str | None
    ) -> asyncpg.Record | None:
        """Record what the provider says: the row and its `old_state`; None when the uid is not
        an attachment's."""
        return await conn.fetchrow(
            "UPDATE message_attachments a SET state = $2,"
            " playback_url = COALESCE($3, a.playback_url),"
            " ready_at = CASE WHEN $2 = 'ready' THEN COALESCE(a.ready_at, now()) END"
            " FROM (SELECT id, state FROM message_attachments WHERE provider_uid = $1"
            "  FOR UPDATE) o WHERE a.id = o.id RETURNING a.*, o.state AS old_state",
            provider_uid,
            state,
            playback_url,
        )

    async def is_attachment(self, provider_uid: str) -> bool:
        return bool(
            await self.db.fetchval(
                "SELECT 1 FROM message_attachments WHERE provider_uid = $1", provider_uid
            )
        )

    async def delete_of_message(
        self, conn: asyncpg.Connection, msg_id: str
    ) -> list[asyncpg.Record]:
        return await conn.fetch(
            "DELETE FROM message_attachments WHERE message_id = $1 RETURNING kind, provider_uid",
            msg_id,
        )

    async def delete_unused(self, conn: asyncpg.Connection, att_id: str) -> list[asyncpg.Record]:
        """The attachment, if it is still in no message."""
        return await conn.fetch(
            "DELETE FROM message_attachments WHERE id = $1 AND message_id IS NULL"
            " RETURNING kind, provider_uid",
            att_id,
        )

    async def delete_of_user(self, conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
        """Their attachments, and those of conversations that no longer exist."""
        return await conn.fetch(
            "DELETE FROM message_attachments a WHERE a.uploader_id = $1 OR NOT EXISTS"
            " (SELECT 1 FROM conversations c WHERE c.id = a.conversation_id)"
            " RETURNING kind, provider_uid",
            user_id,
        )

    async def of_uploader(self, user_id: str) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT * FROM message_attachments WHERE uploader_id = $1 ORDER BY created_at",
            user_id,
        )
