"""SQL of message search (messaging/search.py): the conversations' wrapped search keys and the
blind index, one row per (conversation, term hash, message seq). Rows of a message go with it:
on edit and delete here, on a conversation's deletion by cascade (migration 0014)."""

from __future__ import annotations

import asyncpg

from messaging.store import Conn
from server.personal_data import Erasure
from server.storage import Store

#: rows a term's count stops at when choosing which term walks the index (`term_counts`)
COUNT_CAP = 1000


class SearchStore(Store):
    # -- search keys ---------------------------------------------------------------------------

    async def wrapped_key(self, conn: Conn, conv_id: str) -> bytes | None:
        value = await conn.fetchval(
            "SELECT wrapped_key FROM conversation_search_keys WHERE conversation_id = $1", conv_id
        )
        return None if value is None else bytes(value)

    async def insert_key(
        self, conn: asyncpg.Connection, conv_id: str, wrapped: bytes, key_id: str
    ) -> bytes:
        """Store a new wrapped key; the one stored first when another insert won the race."""
        await conn.execute(
            "INSERT INTO conversation_search_keys (conversation_id, wrapped_key, key_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (conversation_id) DO NOTHING",
            conv_id,
            wrapped,
            key_id,
        )
        stored = await self.wrapped_key(conn, conv_id)
        assert stored is not None
        return stored

    async def wrapped_keys(self) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT conversation_id, wrapped_key, key_id FROM conversation_search_keys"
        )

    async def rewrap(self, conv_id: str, wrapped: bytes, key_id: str) -> None:
        await self.db.execute(
            "UPDATE conversation_search_keys SET wrapped_key = $2, key_id = $3"
            " WHERE conversation_id = $1",
            conv_id,
            wrapped,
            key_id,
        )

    # -- the index -----------------------------------------------------------------------------

    async def add(self, conn: asyncpg.Connection, conv_id: str, seq: int, terms: list[int]) -> None:
        await conn.execute(
            "INSERT INTO message_search (conversation_id, term, seq)"
            " SELECT $1, t, $2 FROM unnest($3::bigint[]) t ON CONFLICT DO NOTHING",
            conv_id,
            seq,
            terms,
        )

    async def add_many(
        self, conn: asyncpg.Connection, convs: list[str], terms: list[int], seqs: list[int]
    ) -> None:
        """Index rows (conversation, term, seq) side by side, in one statement."""
        if terms:
            await conn.execute(
                "INSERT INTO message_search (conversation_id, term, seq)"
                " SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[])"
                " ON CONFLICT DO NOTHING",
                convs,
                terms,
                seqs,
            )

    async def replace_many(
        self,
        conn: asyncpg.Connection,
        conv_id: str,
        seqs: list[int],
        rows: tuple[list[int], list[int]],
    ) -> None:
        """Replace the rows of the messages `seqs` with `rows` (terms, seqs side by side)."""
        await conn.execute(
            "DELETE FROM message_search WHERE conversation_id = $1 AND seq = ANY($2::bigint[])",
            conv_id,
            seqs,
        )
        await conn.execute(
            "INSERT INTO message_search (conversation_id, term, seq)"
            " SELECT $1, t, s FROM unnest($2::bigint[], $3::bigint[]) AS u(t, s)"
            " ON CONFLICT DO NOTHING",
            conv_id,
            *rows,
        )

    async def drop(self, conn: asyncpg.Connection, conv_id: str, seq: int) -> None:
        await conn.execute(
            "DELETE FROM message_search WHERE conversation_id = $1 AND seq = $2", conv_id, seq
        )

    async def term_counts(
        self, conv_id: str, after_seq: int, before_seq: int | None, terms: list[int]
    ) -> list[int]:
        """How many rows each term has in the visible range, counted up to `COUNT_CAP`."""
        rows = await self.db.fetch(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM message_search s"
            "   WHERE s.conversation_id = $1 AND s.term = t AND s.seq > $2"
            "   AND ($3::bigint IS NULL OR s.seq < $3) LIMIT $5) x) AS n"
            " FROM unnest($4::bigint[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
            conv_id,
            after_seq,
            before_seq,
            terms,
            COUNT_CAP,
        )
        return [int(r["n"]) for r in rows]

    async def matches(
        self,
        conv_id: str,
        after_seq: int,
        before_seq: int | None,
        lead: int,
        others: list[int],
        limit: int,
    ) -> list[asyncpg.Record]:
        """Messages (not deleted, seq in the range) that have every term, newest first: walks
        `lead`'s rows backwards and probes the `others` of each."""
        return await self.db.fetch(
            "SELECT m.* FROM message_search s JOIN messages m"
            "  ON m.conversation_id = s.conversation_id AND m.seq = s.seq"
            " WHERE s.conversation_id = $1 AND s.term = $4 AND s.seq > $2"
            " AND ($3::bigint IS NULL OR s.seq < $3) AND m.deleted_at IS NULL"
            " AND (SELECT count(*) FROM message_search o WHERE o.conversation_id = $1"
            "      AND o.seq = s.seq AND o.term = ANY($5::bigint[])) = cardinality($5::bigint[])"
            " ORDER BY s.seq DESC LIMIT $6",
            conv_id,
            after_seq,
            before_seq,
            lead,
            others,
            limit,
        )

    # -- re-indexing (`ours search reindex`) ---------------------------------------------------

    async def conversation_ids(self) -> list[str]:
        rows = await self.db.fetch("SELECT id FROM conversations ORDER BY created_at, id")
        return [str(r["id"]) for r in rows]

    async def bodies(
        self, conn: asyncpg.Connection, conv_id: str, after_seq: int, limit: int
    ) -> list[asyncpg.Record]:
        """The next messages with a body after `after_seq`, by seq, locked against edits and
        deletes until the caller's transaction ends."""
        return await conn.fetch(
            "SELECT id, seq, body FROM messages WHERE conversation_id = $1 AND seq > $2"
            " AND body IS NOT NULL AND deleted_at IS NULL ORDER BY seq LIMIT $3 FOR SHARE",
            conv_id,
            after_seq,
            limit,
        )

    # -- a user's data (erasure; see server/personal_data.py) ----------------------------------

    async def erase_user(self, e: Erasure) -> None:
        """The index rows of the messages the user sent (before `MessagingStore.erase_user`
        tombstones them and renames the sender). Rows of conversations it deletes go by
        cascade; the rows name no user, so nothing else is theirs."""
        await e.execute(
            "message_search (messages they sent)",
            "DELETE FROM message_search s USING messages m"
            " WHERE m.conversation_id = s.conversation_id AND m.seq = s.seq"
            " AND m.sender_id = $1",
            e.user_id,
        )
