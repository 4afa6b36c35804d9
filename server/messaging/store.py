"""SQL for conversations, members, messages, scheduled notes and the HOURS ledger."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = Any  # an asyncpg Connection (in a transaction) or the Pool


async def conversation(conn: Conn, conv_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversations WHERE id = $1" + (" FOR UPDATE" if lock else ""), conv_id
    )


async def direct_by_pair(conn: Conn, pair_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM conversations WHERE pair_key = $1", pair_key)


async def insert_conversation(
    conn: Conn,
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


async def add_members(
    conn: Conn, conv_id: str, members: list[tuple[str, str]], joined_seq: int = 0
) -> None:
    await conn.executemany(
        "INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq,"
        " delivered_seq, read_seq) VALUES ($1, $2, $3, $4, $4, $4) ON CONFLICT DO NOTHING",
        [(conv_id, uid, role, joined_seq) for uid, role in members],
    )


async def remove_member(conn: Conn, conv_id: str, user_id: str) -> bool:
    status = await conn.execute(
        "DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conv_id,
        user_id,
    )
    return bool(status.endswith(" 1"))


async def member(conn: Conn, conv_id: str, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conv_id,
        user_id,
    )


async def member_ids(conn: Conn, conv_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1 ORDER BY joined_at",
        conv_id,
    )
    return [r["user_id"] for r in rows]


async def member_count(conn: Conn, conv_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM conversation_members WHERE conversation_id = $1", conv_id
        )
    )


async def conversation_ids_of(conn: Conn, user_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT conversation_id FROM conversation_members WHERE user_id = $1", user_id
    )
    return [str(r["conversation_id"]) for r in rows]


async def list_for_user(conn: Conn, user_id: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT c.id, c.kind, c.title, c.owner_id, c.last_seq, c.wrapped_key,"
        "  m.read_seq, m.joined_seq,"
        "  (SELECT array_agg(user_id ORDER BY joined_at) FROM conversation_members x"
        "     WHERE x.conversation_id = c.id) AS members,"
        "  (SELECT count(*) FROM messages g WHERE g.conversation_id = c.id"
        "     AND g.seq > m.read_seq AND g.sender_id <> $1 AND g.deleted_at IS NULL) AS unread,"
        "  l.id AS last_id, l.seq AS last_msg_seq, l.sender_id AS last_sender, l.body AS last_body,"
        "  l.kind AS last_kind, l.created_at AS last_at, l.deleted_at AS last_deleted,"
        "  l.tip_amount AS last_tip"
        " FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id"
        " LEFT JOIN LATERAL (SELECT * FROM messages g WHERE g.conversation_id = c.id"
        "   AND g.seq > m.joined_seq ORDER BY g.seq DESC LIMIT 1) l ON true"
        " WHERE m.user_id = $1 ORDER BY COALESCE(l.created_at, c.created_at) DESC LIMIT $2",
        user_id,
        limit,
    )


async def next_seq(conn: Conn, conv_id: str) -> int:
    """Take the next gap-free sequence number (row lock until the transaction ends)."""
    return int(
        await conn.fetchval(
            "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
            conv_id,
        )
    )


async def message_by_client_id(
    conn: Conn, conv_id: str, sender_id: str, client_msg_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM messages WHERE conversation_id = $1 AND sender_id = $2"
        " AND client_msg_id = $3",
        conv_id,
        sender_id,
        client_msg_id,
    )


async def insert_message(
    conn: Conn,
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
        "INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, kind, body,"
        " reply_to, tip_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
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


async def message(conn: Conn, conv_id: str, msg_id: str, *, lock: bool = False) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM messages WHERE conversation_id = $1 AND id = $2"
        + (" FOR UPDATE" if lock else ""),
        conv_id,
        msg_id,
    )


async def history(
    conn: Conn, conv_id: str, after_seq: int, before_seq: int | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM messages WHERE conversation_id = $1 AND seq > $2"
        " AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
        conv_id,
        after_seq,
        before_seq,
        limit,
    )


async def update_body(conn: Conn, msg_id: str, body: bytes) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE messages SET body = $2, edited_at = now() WHERE id = $1 RETURNING *",
        msg_id,
        body,
    )
    assert row is not None
    return row


async def tombstone(conn: Conn, msg_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE messages SET body = NULL, deleted_at = now() WHERE id = $1 RETURNING *", msg_id
    )
    assert row is not None
    return row


async def advance_cursor(
    conn: Conn, conv_id: str, user_id: str, column: str, seq: int
) -> asyncpg.Record | None:
    """Move delivered_seq or read_seq forward (never back); read implies delivered."""
    assert column in ("delivered_seq", "read_seq")
    extra = ", delivered_seq = GREATEST(delivered_seq, $3)" if column == "read_seq" else ""
    return await conn.fetchrow(
        f"UPDATE conversation_members SET {column} = GREATEST({column}, $3){extra}"
        " WHERE conversation_id = $1 AND user_id = $2"
        " RETURNING delivered_seq, read_seq",
        conv_id,
        user_id,
        seq,
    )


async def unread(conn: Conn, conv_id: str, user_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM messages g JOIN conversation_members m"
            " ON m.conversation_id = g.conversation_id AND m.user_id = $2"
            " WHERE g.conversation_id = $1 AND g.seq > m.read_seq AND g.sender_id <> $2"
            " AND g.deleted_at IS NULL",
            conv_id,
            user_id,
        )
    )


async def all_wrapped_keys(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, wrapped_key, key_id FROM conversations")


async def rewrap(conn: Conn, conv_id: str, wrapped: bytes, key_id: str) -> None:
    await conn.execute(
        "UPDATE conversations SET wrapped_key = $2, key_id = $3 WHERE id = $1",
        conv_id,
        wrapped,
        key_id,
    )


# -- scheduled notes ----------------------------------------------------------------------


async def insert_scheduled(
    conn: Conn, note_id: str, conv_id: str, sender_id: str, body: bytes, deliver_at: Any
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


async def scheduled(conn: Conn, note_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM scheduled_messages WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        note_id,
    )


async def scheduled_of(conn: Conn, sender_id: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT s.*, (SELECT jsonb_agg(jsonb_build_object('user_id', m.user_id,"
        "   'delivered_seq', m.delivered_seq, 'read_seq', m.read_seq))"
        "   FROM conversation_members m WHERE m.conversation_id = s.conversation_id"
        "   AND m.user_id <> s.sender_id) AS recipients"
        " FROM scheduled_messages s WHERE s.sender_id = $1 ORDER BY s.deliver_at DESC LIMIT $2",
        sender_id,
        limit,
    )


async def set_scheduled_state(
    conn: Conn, note_id: str, state: str, message_id: str | None = None, seq: int | None = None
) -> None:
    await conn.execute(
        "UPDATE scheduled_messages SET state = $2, message_id = $3, seq = $4 WHERE id = $1",
        note_id,
        state,
        message_id,
        seq,
    )


# -- HOURS ledger -------------------------------------------------------------------------


async def transfer_by_key(conn: Conn, idem_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM hours_transfers WHERE idem_key = $1", idem_key)


async def move_hours(
    conn: Conn,
    kind: str,
    from_account: str,
    to_account: str,
    amount: Decimal,
    idem_key: str,
    actor_id: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
) -> asyncpg.Record:
    """Debit and credit in the caller's transaction; the CHECK refuses an overdraft."""
    await conn.execute(
        "INSERT INTO hours_accounts (account) VALUES ($1), ($2) ON CONFLICT DO NOTHING",
        from_account,
        to_account,
    )
    transfer_id = str(uuid.uuid4())
    row = await conn.fetchrow(
        "INSERT INTO hours_transfers (id, kind, from_account, to_account, amount, idem_key,"
        " conversation_id, message_id, actor_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " RETURNING *",
        transfer_id,
        kind,
        from_account,
        to_account,
        amount,
        idem_key,
        conversation_id,
        message_id,
        actor_id,
    )
    await conn.execute(
        "UPDATE hours_accounts SET balance = balance - $2 WHERE account = $1", from_account, amount
    )
    await conn.execute(
        "UPDATE hours_accounts SET balance = balance + $2 WHERE account = $1", to_account, amount
    )
    await conn.executemany(
        "INSERT INTO ledger_entries (transfer_id, account, amount) VALUES ($1, $2, $3)",
        [(transfer_id, from_account, -amount), (transfer_id, to_account, amount)],
    )
    assert row is not None
    return row


async def balance(conn: Conn, account: str) -> Decimal:
    value = await conn.fetchval("SELECT balance FROM hours_accounts WHERE account = $1", account)
    return Decimal(value or 0)


async def ledger_sum(conn: Conn) -> Decimal:
    return Decimal(await conn.fetchval("SELECT COALESCE(sum(amount), 0) FROM ledger_entries"))
