"""Erasure of one user (`DELETE /v1/me`): every row of theirs removed or anonymized in ONE
transaction, then their traces in Redis and in process memory, and their sockets closed.

What "anonymized" means: the user id is replaced by a pseudonym, `erased:` + the first 20 hex
digits of HMAC-SHA256(master key, id). The pseudonym keeps records that belong to others
consistent (the audit log, the HOURS ledger, the other side of a conversation) without naming
the user; an operator holding the master key can still answer "was user X erased?" by computing
it, nobody can go from the pseudonym back to the id.

Per table (read server/migrations/*.sql):
  removed     their notifications, preferences, push devices, delivery log (routing), activity
              opt-in and entries, conversation memberships, scheduled notes, conversations left
              without members, audio rooms they host and their audio memberships, videos and live
              inputs they created, live-chat messages and restrictions on them, Telegram link,
              link codes, brief markers, the chat's blocked/alert markers, bot_users, their
              notes' jobs and every job whose payload names them (digests, daily briefs)
  anonymized  messages they sent (tombstoned: body removed, sender = pseudonym), the HOURS
              account (renamed, so ledger entries still sum to zero and balances stay right),
              transfers, the event log and dead letters (actor, subjects, payload strings), the
              audit log (through `audit_log_erase_subject`, migration 0009: append-only except
              for this substitution), other people's notifications, restrictions they imposed,
              lives they hosted, direct-conversation pair keys
  kept        the erasure itself, audited with the pseudonym as its target

Late writes: an event already on the bus when the erasure ran (a message to them, a tip) may be
consumed afterwards and recreate a row. Two follow-up sweeps (durable jobs, default after 30 s
and 10 min) run the same erasure again; their payload holds the id sealed with the master key,
and each deletes its own job row when done.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

import namespaces
from server.auth import Principal
from server.privacy import ephemeral

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.privacy")

SWEEP_JOB = "privacy.sweep"
DISCONNECT_CODE = "account_deleted"


def pseudonym(master_key: bytes, user_id: str) -> str:
    digest = hmac.new(master_key, b"ours:erase:" + user_id.encode(), hashlib.sha256).hexdigest()
    return "erased:" + digest[:20]


def _count(status: str) -> int:
    """Rows touched, from an asyncpg status string ("DELETE 3", "UPDATE 0", "INSERT 0 1")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


@dataclass
class Erased:
    """What one erasure pass touched; the after-commit steps need the ids it collected."""

    pseudonym: str
    rows: dict[str, int] = field(default_factory=dict)
    live_audio_rooms: list[str] = field(default_factory=list)  # hosted: ended after commit
    audio_seats: list[str] = field(default_factory=list)  # live rooms they are in: leave LiveKit
    lives: list[str] = field(default_factory=list)
    chat_ids: list[int] = field(default_factory=list)

    def add(self, label: str, n: int) -> None:
        if n:
            self.rows[label] = self.rows.get(label, 0) + n


# -- the rows, one area at a time (each runs in the caller's transaction) ------------------
# $1 is the user id, $2 the pseudonym. Identifier columns compare exactly (privacy_erase_ident),
# prose by whole word (privacy_erase_text), JSON by key (privacy_erase_json): migration 0009.
# UPDATEs touch only rows whose value really changes, so the counts are exact and a second
# pass (the sweeps) finds nothing left.


async def _core(conn: Any, uid: str, ps: str, out: Erased) -> None:
    out.add(
        "events",
        _count(
            await conn.execute(
                "UPDATE events SET actor = privacy_erase_ident(actor, $1, $2),"
                " subjects = privacy_erase_idents(subjects, $1, $2),"
                " payload = privacy_erase_json(payload, $1, $2)"
                " WHERE actor = $1 OR ('user:' || $1) = ANY(subjects)"
                " OR payload IS DISTINCT FROM privacy_erase_json(payload, $1, $2)",
                uid,
                ps,
            )
        ),
    )
    out.add(
        "dead_letters",
        _count(
            await conn.execute(
                "UPDATE dead_letters SET envelope = privacy_erase_json(envelope, $1, $2)"
                " WHERE envelope IS DISTINCT FROM privacy_erase_json(envelope, $1, $2)",
                uid,
                ps,
            )
        ),
    )
    out.add(
        "jobs",
        _count(
            await conn.execute(
                "DELETE FROM jobs"
                " WHERE payload IS DISTINCT FROM privacy_erase_json(payload, $1, $2)",
                uid,
                ps,
            )
        ),
    )
    out.add(
        "audit_log", int(await conn.fetchval("SELECT audit_log_erase_subject($1, $2)", uid, ps))
    )


async def _routing(conn: Any, uid: str, ps: str, out: Erased, node: Node) -> None:
    router = node.features.get("router")
    if router is not None:
        await router.store.delete_user(conn, uid)  # type: ignore[attr-defined]
    out.add(
        "notifications (others')",
        _count(
            await conn.execute(
                "UPDATE notifications SET actors = privacy_erase_idents(actors, $1, $2),"
                " title = privacy_erase_text(title, $1, $2),"
                " body = privacy_erase_text(body, $1, $2),"
                " data = privacy_erase_json(data, $1, $2)"
                " WHERE $1 = ANY(actors)"
                " OR title IS DISTINCT FROM privacy_erase_text(title, $1, $2)"
                " OR body IS DISTINCT FROM privacy_erase_text(body, $1, $2)"
                " OR data IS DISTINCT FROM privacy_erase_json(data, $1, $2)",
                uid,
                ps,
            )
        ),
    )


async def _activity(conn: Any, uid: str, out: Erased, node: Node) -> None:
    activity = node.features.get("activity")
    if activity is not None:
        out.add("activity_entries", await activity.service.delete_user(conn, uid))  # type: ignore[attr-defined]


async def _messaging(conn: Any, uid: str, ps: str, out: Erased) -> None:
    notes = [
        r["id"]
        for r in await conn.fetch("SELECT id FROM scheduled_messages WHERE sender_id = $1", uid)
    ]
    if notes:
        await conn.execute(
            "DELETE FROM jobs WHERE key = ANY($1::text[])", [f"note:{n}" for n in notes]
        )
        out.add(
            "scheduled_messages",
            _count(await conn.execute("DELETE FROM scheduled_messages WHERE sender_id = $1", uid)),
        )
    # circles they own pass to the longest-standing other member (as conversation:leave does)
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
            " WHERE c.id = m.conversation_id AND c.id = ANY($1::uuid[]) AND m.user_id = c.owner_id",
            [r["id"] for r in owned],
        )
    left = [
        r["conversation_id"]
        for r in await conn.fetch(
            "DELETE FROM conversation_members WHERE user_id = $1 RETURNING conversation_id", uid
        )
    ]
    out.add("conversation_members", len(left))
    out.add(
        "conversations (left empty)",
        _count(
            await conn.execute(
                "DELETE FROM conversations c WHERE c.id = ANY($1::uuid[]) AND NOT EXISTS"
                " (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id)",
                left,
            )
        ),
    )
    out.add(
        "conversations (pair keys)",
        _count(
            await conn.execute(
                "UPDATE conversations SET pair_key = array_to_string(privacy_erase_idents("
                "  string_to_array(pair_key, '|'), $1, $2), '|')"
                " WHERE $1 = ANY(string_to_array(pair_key, '|'))",
                uid,
                ps,
            )
        ),
    )
    out.add(
        "messages (tombstoned)",
        _count(
            await conn.execute(
                "UPDATE messages SET sender_id = $2, client_msg_id = 'erased:' || id::text,"
                " body = NULL, deleted_at = COALESCE(deleted_at, now()) WHERE sender_id = $1",
                uid,
                ps,
            )
        ),
    )
    # HOURS: rename the account; entries are renamed, never deleted (they still sum to zero)
    old, new = f"user:{uid}", f"user:{ps}"
    moved = _count(
        await conn.execute(
            "INSERT INTO hours_accounts (account, balance)"
            " SELECT $2, balance FROM hours_accounts WHERE account = $1"
            " ON CONFLICT (account) DO UPDATE"
            " SET balance = hours_accounts.balance + EXCLUDED.balance",
            old,
            new,
        )
    )
    if moved:
        await conn.execute("DELETE FROM hours_accounts WHERE account = $1", old)
    out.add("hours_accounts", moved)
    out.add(
        "ledger_entries",
        _count(
            await conn.execute(
                "UPDATE ledger_entries SET account = $2 WHERE account = $1", old, new
            )
        ),
    )
    out.add(
        "hours_transfers",
        _count(
            await conn.execute(
                "UPDATE hours_transfers"
                " SET from_account = privacy_erase_ident(from_account, $1, $2),"
                " to_account = privacy_erase_ident(to_account, $1, $2),"
                " actor_id = privacy_erase_ident(actor_id, $1, $2),"
                # tips: "tip:<sender>:<conversation>:<client id>" (server/messaging/service.py)
                " idem_key = CASE WHEN starts_with(idem_key, 'tip:' || $1 || ':')"
                "   THEN 'tip:' || $2 || substr(idem_key, length($1) + 5) ELSE idem_key END"
                " WHERE from_account = 'user:' || $1 OR to_account = 'user:' || $1"
                " OR actor_id = $1 OR starts_with(idem_key, 'tip:' || $1 || ':')",
                uid,
                ps,
            )
        ),
    )


async def _media(conn: Any, uid: str, out: Erased) -> None:
    out.live_audio_rooms += [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM audio_rooms WHERE host_id = $1 AND state = 'live'", uid
        )
    ]
    out.audio_seats += [
        r["room_id"]
        for r in await conn.fetch(
            "SELECT m.room_id FROM audio_members m JOIN audio_rooms r ON r.id = m.room_id"
            " WHERE m.user_id = $1 AND m.present AND r.state = 'live' AND r.host_id <> $1",
            uid,
        )
    ]
    for label, sql in (
        ("audio_rooms", "DELETE FROM audio_rooms WHERE host_id = $1"),
        ("audio_members", "DELETE FROM audio_members WHERE user_id = $1"),
        ("live_inputs", "DELETE FROM live_inputs WHERE creator_id = $1"),
        ("media", "DELETE FROM media WHERE creator_id = $1"),
    ):
        out.add(label, _count(await conn.execute(sql, uid)))


async def _livechat(conn: Any, uid: str, ps: str, out: Erased) -> None:
    out.lives += [
        r["live_id"]
        for r in await conn.fetch(
            "SELECT live_id FROM live_chat_restrictions WHERE user_id = $1 OR by_user = $1"
            " UNION SELECT id FROM lives WHERE host_id = $1",
            uid,
        )
    ]
    for label, sql in (
        ("live_chat_messages", "DELETE FROM live_chat_messages WHERE user_id = $1"),
        ("live_chat_restrictions", "DELETE FROM live_chat_restrictions WHERE user_id = $1"),
    ):
        out.add(label, _count(await conn.execute(sql, uid)))
    for label, sql in (
        (
            "live_chat_messages (deleted by)",
            "UPDATE live_chat_messages SET deleted_by = $2 WHERE deleted_by = $1",
        ),
        (
            "live_chat_restrictions (imposed)",
            "UPDATE live_chat_restrictions SET by_user = privacy_erase_ident(by_user, $1, $2),"
            " reason = privacy_erase_text(reason, $1, $2)"
            " WHERE by_user = $1 OR reason IS DISTINCT FROM privacy_erase_text(reason, $1, $2)",
        ),
        (
            "lives (hosted)",
            "UPDATE lives SET host_id = $2 WHERE host_id = $1",
        ),
    ):
        out.add(label, _count(await conn.execute(sql, uid, ps)))


async def _bots(conn: Any, uid: str, out: Erased) -> None:
    out.chat_ids += [
        int(r["chat_id"])
        for r in await conn.fetch(
            "DELETE FROM telegram_links WHERE user_id = $1 RETURNING chat_id", uid
        )
    ]
    out.add("telegram_links", len(out.chat_ids))
    for label, sql in (
        ("telegram_link_codes", "DELETE FROM telegram_link_codes WHERE user_id = $1"),
        ("bot_briefs_sent", "DELETE FROM bot_briefs_sent WHERE user_id = $1"),
        ("bot_users", "DELETE FROM bot_users WHERE user_id = $1"),
    ):
        out.add(label, _count(await conn.execute(sql, uid)))
    if out.chat_ids:
        for label, sql in (
            (
                "telegram_blocked_chats",
                "DELETE FROM telegram_blocked_chats WHERE chat_id = ANY($1)",
            ),
            ("bot_alerts_sent", "DELETE FROM bot_alerts_sent WHERE chat_id = ANY($1)"),
        ):
            out.add(label, _count(await conn.execute(sql, out.chat_ids)))


async def erase_rows(conn: Any, node: Node, uid: str, ps: str) -> Erased:
    """Every table, inside the caller's transaction."""
    out = Erased(ps)
    await _routing(conn, uid, ps, out, node)
    await _activity(conn, uid, out, node)
    await _messaging(conn, uid, ps, out)
    await _media(conn, uid, out)
    await _livechat(conn, uid, ps, out)
    await _bots(conn, uid, out)
    await _core(conn, uid, ps, out)  # last: jobs and events the steps above may have named
    return out


# -- the service ----------------------------------------------------------------------------


class Eraser:
    def __init__(self, node: Node, redis: Any) -> None:
        self.node = node
        self.redis = redis
        self.sweeps: tuple[timedelta, ...] = (timedelta(seconds=30), timedelta(minutes=10))

    def pseudonym(self, user_id: str) -> str:
        return pseudonym(self.node.keyring.current, user_id)

    async def disconnect(self, user_id: str) -> None:
        """Close the user's sockets on every namespace of every node, telling them why."""
        for ns in namespaces.ALL:
            await self.node.fanout.disconnect_user(
                ns, user_id, DISCONNECT_CODE, "this account was deleted"
            )

    async def erase(
        self, user_id: str, by: Principal | str, reason: str | None = None
    ) -> dict[str, Any]:
        """Erase `user_id`. `by` is the user themself (a Principal with their id), an admin
        Principal, or an API key id; the audit entry names the pseudonym, never the id."""
        ps = self.pseudonym(user_id)
        if self.node.sio is not None:
            await self.disconnect(user_id)  # first: nothing of theirs races the transaction
        self_erase = isinstance(by, Principal) and by.user_id == user_id
        actor: Principal | str = (
            Principal(ps, by.role) if isinstance(by, Principal) and self_erase else by
        )

        async def in_transaction(conn: Any) -> Erased:
            erased = await erase_rows(conn, self.node, user_id, ps)
            await self.node.audit.record(
                actor,
                "privacy.erase",
                f"user:{ps}",
                reason,
                {"by": "self" if self_erase else "admin", "rows": erased.rows},
                conn=conn,
            )
            for i, delay in enumerate(self.sweeps, 1):
                key = f"{SWEEP_JOB}:{ps}:{i}"
                sealed = self.node.keyring.seal_secret(user_id, key).hex()
                await self.node.scheduler.schedule(
                    SWEEP_JOB,
                    key,
                    datetime.now(UTC) + delay,
                    {"key": key, "subject": sealed, "pseudonym": ps},
                    conn=conn,
                    replace=True,
                )
            return erased

        erased = await self._transaction(in_transaction)
        erased.add("redis keys", await ephemeral.forget(self.node, self.redis, user_id, erased))
        await self._after(user_id, erased)
        if self.node.sio is not None:
            await self.disconnect(user_id)  # a socket that connected meanwhile
        log.warning("user erased", extra={"pseudonym": ps, "tables": len(erased.rows)})
        return {"erased": True, "pseudonym": ps, "rows": erased.rows}

    async def _transaction(self, body: Callable[[Any], Awaitable[Erased]]) -> Erased:
        """Run `body` in one transaction; again (at most twice) when PostgreSQL chose it as a
        deadlock victim: the erasure takes row locks across many tables in its own order."""
        for attempt in range(3):
            try:
                async with self.node.storage.db.acquire() as conn, conn.transaction():
                    return await body(conn)
            except asyncpg.DeadlockDetectedError:
                if attempt == 2:
                    raise
                log.warning("erasure hit a deadlock; retrying")
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _after(self, user_id: str, erased: Erased) -> None:
        """Outside the transaction: end live audio rooms they hosted (LiveKit, sockets) and
        take them out of the LiveKit rooms they were in."""
        media = self.node.features.get("media")
        livekit = getattr(media, "livekit", None)
        for room_id in erased.audio_seats:
            try:
                if livekit is not None:
                    await livekit.remove(room_id, user_id)
            except Exception:
                log.warning("removing an erased user from LiveKit failed", exc_info=True)
        for room_id in erased.live_audio_rooms:
            try:
                if livekit is not None:
                    await livekit.delete_room(room_id)
                await self.node.fanout.emit(
                    "audio:ended",
                    {"room_id": room_id, "reason": "the host's account was deleted"},
                    namespace="/live",
                    room=f"audio:{room_id}",
                )
            except Exception:
                log.warning("ending an erased host's audio room failed", exc_info=True)

    async def sweep(self, payload: dict[str, Any]) -> None:
        """Job: the same erasure again, for rows and keys written after it (late bus events,
        another node's disconnect handlers). Audited only when it found something."""
        key, ps = payload["key"], payload["pseudonym"]
        user_id = self.node.keyring.open_secret(bytes.fromhex(payload["subject"]), key)

        async def in_transaction(conn: Any) -> Erased:
            erased = await erase_rows(conn, self.node, user_id, ps)
            if erased.rows:
                await self.node.audit.record(
                    "system",
                    "privacy.erase_sweep",
                    f"user:{ps}",
                    "rows written after the erasure",
                    {"rows": erased.rows},
                    conn=conn,
                )
            await conn.execute("DELETE FROM jobs WHERE key = $1", key)
            return erased

        erased = await self._transaction(in_transaction)
        await ephemeral.forget(self.node, self.redis, user_id, erased)
        if erased.rows:
            log.warning("erasure sweep found late rows", extra={"pseudonym": ps, **erased.rows})
