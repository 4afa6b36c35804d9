"""Direct messages and circles: conversations, messages (encrypted at rest), receipts,
typing, HOURS tips and scheduled notes. Handlers in namespaces/messages.py call this."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from server.crypto import DecryptError, new_data_key, seal, unseal
from server.errors import ApiError, Code
from server.events import build_event
from server.messaging import store

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.messages")

NS = "/messages"
MAX_MEMBERS = 150
TYPING_INTERVAL = 2.0  # seconds between typing broadcasts per user (seed: debounce 2 s)
TYPING_EXPIRY = 5.0  # a start expires by itself after this
MINT = "system:mint"


def room(conv_id: str) -> str:
    return f"conversation:{conv_id}"


def account(user_id: str) -> str:
    return f"user:{user_id}"


class Messaging:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.keyring = node.keyring
        self._keys: OrderedDict[str, bytes] = OrderedDict()  # conversation -> data key
        self._typing_sent: dict[tuple[str, str], float] = {}
        self._typing_expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}

    @property
    def db(self) -> asyncpg.Pool:
        return self.node.storage.db

    # -- keys and bodies ----------------------------------------------------------------

    def _data_key(self, conv_id: str, wrapped: bytes) -> bytes:
        key = self._keys.get(conv_id)
        if key is None:
            key = self.keyring.unwrap(wrapped, conv_id.encode())
            self._keys[conv_id] = key
            if len(self._keys) > 10_000:
                self._keys.popitem(last=False)
        return key

    async def _key_for(self, conv_id: str, conn: Any = None) -> bytes:
        if conv_id in self._keys:
            return self._keys[conv_id]
        row = await store.conversation(conn or self.db, conv_id)
        if row is None:
            raise ApiError(Code.NOT_FOUND, "no such conversation")
        return self._data_key(conv_id, row["wrapped_key"])

    @staticmethod
    def _aad(conv_id: str, msg_id: str) -> bytes:
        return f"{conv_id}|{msg_id}".encode()

    def _open(self, key: bytes, conv_id: str, row: Any) -> str | None:
        if row["body"] is None:
            return None
        try:
            return unseal(key, row["body"], self._aad(conv_id, str(row["id"]))).decode()
        except DecryptError:
            log.error("message failed to decrypt", extra={"message_id": str(row["id"])})
            raise ApiError(Code.INTERNAL, "a message could not be decrypted") from None

    def _wire(self, key: bytes, conv_id: str, row: Any) -> dict[str, Any]:
        out = {
            "id": str(row["id"]),
            "conversation_id": conv_id,
            "seq": row["seq"],
            "sender_id": row["sender_id"],
            "kind": row["kind"],
            "body": self._open(key, conv_id, row),
            "reply_to": str(row["reply_to"]) if row["reply_to"] else None,
            "ts": row["created_at"].isoformat(),
            "edited": row["edited_at"] is not None,
            "deleted": row["deleted_at"] is not None,
        }
        if row["tip_amount"] is not None:
            out["amount"] = float(row["tip_amount"])
        return out

    # -- membership -----------------------------------------------------------------------

    async def _require_member(self, conn: Any, conv_id: str, user_id: str) -> Any:
        m = await store.member(conn, conv_id, user_id)
        if m is None:
            raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
        return m

    async def rooms_for(self, user_id: str) -> list[str]:
        return [room(c) for c in await store.conversation_ids_of(self.db, user_id)]

    async def _join(self, user_ids: list[str], conv_id: str) -> None:
        for uid in user_ids:
            await self.node.fanout.join_user(NS, uid, room(conv_id))

    async def _new_conversation(
        self, conn: Any, kind: str, title: str | None, owner: str | None, pair: str | None
    ) -> Any:
        conv_id = str(uuid.uuid4())
        data_key = new_data_key()
        wrapped = self.keyring.wrap(data_key, conv_id.encode())
        row = await store.insert_conversation(
            conn, conv_id, kind, title, owner, pair, wrapped, self.keyring.key_id
        )
        if row is not None:
            self._keys[conv_id] = data_key
        return row

    def _summary(self, row: Any, members: list[str]) -> dict[str, Any]:
        return {
            "id": str(row["id"]),
            "kind": row["kind"],
            "title": row["title"],
            "owner_id": row["owner_id"],
            "members": members,
        }

    async def open_direct(self, user_id: str, other_id: str) -> dict[str, Any]:
        if other_id == user_id:
            raise ApiError(Code.BAD_REQUEST, "a conversation needs another user")
        pair = "|".join(sorted((user_id, other_id)))
        row = await store.direct_by_pair(self.db, pair)
        if row is None:
            async with self.db.acquire() as conn, conn.transaction():
                row = await self._new_conversation(conn, "direct", None, None, pair)
                if row is not None:
                    await store.add_members(
                        conn, str(row["id"]), [(user_id, "member"), (other_id, "member")]
                    )
            if row is None:  # created concurrently: the pair key is unique
                row = await store.direct_by_pair(self.db, pair)
            else:
                await self._join([user_id, other_id], str(row["id"]))
        assert row is not None
        return self._summary(row, sorted((user_id, other_id)))

    async def create_group(self, owner: str, title: str, members: list[str]) -> dict[str, Any]:
        others = [m for m in dict.fromkeys(members) if m != owner]
        if len(others) + 1 > MAX_MEMBERS:
            raise ApiError(Code.FORBIDDEN, f"a circle has at most {MAX_MEMBERS} members")
        async with self.db.acquire() as conn, conn.transaction():
            row = await self._new_conversation(conn, "group", title, owner, None)
            await store.add_members(
                conn, str(row["id"]), [(owner, "owner"), *((m, "member") for m in others)]
            )
        await self._join([owner, *others], str(row["id"]))
        return self._summary(row, [owner, *others])

    async def add_member(self, actor: str, conv_id: str, user_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            conv = await self._owned_group(conn, actor, conv_id)
            if await store.member(conn, conv_id, user_id):
                raise ApiError(Code.CONFLICT, "already a member")
            if await store.member_count(conn, conv_id) >= MAX_MEMBERS:
                raise ApiError(Code.FORBIDDEN, f"a circle has at most {MAX_MEMBERS} members")
            await store.add_members(conn, conv_id, [(user_id, "member")], conv["last_seq"])
            members = await store.member_ids(conn, conv_id)
        await self._join([user_id], conv_id)
        await self._broadcast_members(conv_id, members, {"added": user_id})
        return {"conversation_id": conv_id, "members": members}

    async def remove_member(self, actor: str, conv_id: str, user_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            conv = await self._owned_group(conn, actor, conv_id)
            if user_id == conv["owner_id"]:
                raise ApiError(Code.BAD_REQUEST, "the owner leaves with conversation:leave")
            if not await store.remove_member(conn, conv_id, user_id):
                raise ApiError(Code.NOT_FOUND, "not a member")
            members = await store.member_ids(conn, conv_id)
        await self.node.fanout.leave_user(NS, user_id, room(conv_id))
        await self.node.fanout.emit(
            "conversation:removed",
            {"conversation_id": conv_id},
            namespace=NS,
            room=f"user:{user_id}",
        )
        await self._broadcast_members(conv_id, members, {"removed": user_id})
        return {"conversation_id": conv_id, "members": members}

    async def leave(self, user_id: str, conv_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            conv = await store.conversation(conn, conv_id, lock=True)
            if conv is None:
                raise ApiError(Code.NOT_FOUND, "no such conversation")
            if conv["kind"] == "direct":
                raise ApiError(Code.BAD_REQUEST, "a direct conversation cannot be left")
            if not await store.remove_member(conn, conv_id, user_id):
                raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
            members = await store.member_ids(conn, conv_id)
            if conv["owner_id"] == user_id and members:  # hand the circle on
                await conn.execute(
                    "UPDATE conversations SET owner_id = $2 WHERE id = $1", conv_id, members[0]
                )
                await conn.execute(
                    "UPDATE conversation_members SET role = 'owner'"
                    " WHERE conversation_id = $1 AND user_id = $2",
                    conv_id,
                    members[0],
                )
        await self.node.fanout.leave_user(NS, user_id, room(conv_id))
        await self._broadcast_members(conv_id, members, {"left": user_id})
        return {"conversation_id": conv_id}

    async def _owned_group(self, conn: Any, actor: str, conv_id: str) -> Any:
        conv = await store.conversation(conn, conv_id, lock=True)
        if conv is None:
            raise ApiError(Code.NOT_FOUND, "no such conversation")
        if conv["kind"] != "group":
            raise ApiError(Code.BAD_REQUEST, "members change only in circles")
        if conv["owner_id"] != actor:
            raise ApiError(Code.FORBIDDEN, "only the owner changes members")
        return conv

    async def _broadcast_members(
        self, conv_id: str, members: list[str], change: dict[str, str]
    ) -> None:
        await self.node.fanout.emit(
            "conversation:members",
            {"conversation_id": conv_id, "members": members, **change},
            namespace=NS,
            room=room(conv_id),
        )

    async def conversations(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await store.list_for_user(self.db, user_id, limit)
        out = []
        for r in rows:
            conv_id = str(r["id"])
            last = None
            if r["last_id"] is not None:
                key = self._data_key(conv_id, r["wrapped_key"])
                body = None
                if r["last_body"] is not None and r["last_deleted"] is None:
                    body = unseal(
                        key, r["last_body"], self._aad(conv_id, str(r["last_id"]))
                    ).decode()
                last = {
                    "id": str(r["last_id"]),
                    "seq": r["last_msg_seq"],
                    "sender_id": r["last_sender"],
                    "kind": r["last_kind"],
                    "body": body,
                    "ts": r["last_at"].isoformat(),
                }
            out.append(
                {
                    "id": conv_id,
                    "kind": r["kind"],
                    "title": r["title"],
                    "owner_id": r["owner_id"],
                    "members": list(r["members"] or []),
                    "last_message": last,
                    "unread": int(r["unread"]),
                    "read_seq": r["read_seq"],
                }
            )
        return out

    # -- messages ---------------------------------------------------------------------------

    async def send(
        self,
        user_id: str,
        conv_id: str,
        client_msg_id: str,
        body: str,
        reply_to: str | None,
        skip_sid: str | None,
        *,
        kind: str = "text",
    ) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_member(conn, conv_id, user_id)
            seq = await store.next_seq(conn, conv_id)  # locks the conversation row
            existing = await store.message_by_client_id(conn, conv_id, user_id, client_msg_id)
            if existing is not None:
                raise _Duplicate(existing)
            if reply_to is not None and await store.message(conn, conv_id, reply_to) is None:
                raise ApiError(Code.NOT_FOUND, "reply_to is not a message of this conversation")
            key = await self._key_for(conv_id, conn)
            msg_id = str(uuid.uuid4())
            sealed = seal(key, body.encode(), self._aad(conv_id, msg_id))
            row = await store.insert_message(
                conn, msg_id, conv_id, seq, user_id, client_msg_id, kind, sealed, reply_to
            )
            members = await store.member_ids(conn, conv_id)
        wire = self._wire(key, conv_id, row)
        await self._announce(wire, members, skip_sid)
        return {"id": wire["id"], "seq": seq, "ts": wire["ts"]}

    async def send_idempotent(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await self.send(*args, **kwargs)
        except _Duplicate as dup:
            row = dup.row
            return {
                "id": str(row["id"]),
                "seq": row["seq"],
                "ts": row["created_at"].isoformat(),
                "duplicate": True,
            }

    async def _announce(
        self, wire: dict[str, Any], members: list[str], skip_sid: str | None
    ) -> None:
        conv_id = wire["conversation_id"]
        await self.node.fanout.emit(
            "message:new", wire, namespace=NS, room=room(conv_id), skip_sid=skip_sid
        )
        recipients = [m for m in members if m != wire["sender_id"]]
        await self.node.bus.publish(
            build_event(
                {
                    "type": "message.sent",
                    "actor": wire["sender_id"],
                    "payload": {
                        "conversation_id": conv_id,
                        "message_id": wire["id"],
                        "sender_id": wire["sender_id"],
                        "seq": wire["seq"],
                        "recipients": recipients[:MAX_MEMBERS],
                    },
                }
            )
        )

    async def history(
        self, user_id: str, conv_id: str, before_seq: int | None, limit: int
    ) -> dict[str, Any]:
        m = await self._require_member(self.db, conv_id, user_id)
        rows = await store.history(self.db, conv_id, m["joined_seq"], before_seq, limit)
        key = await self._key_for(conv_id)
        messages = [self._wire(key, conv_id, r) for r in rows]
        next_before = messages[-1]["seq"] if len(messages) == limit else None
        return {"messages": messages, "next_before_seq": next_before}

    async def edit(self, user_id: str, conv_id: str, msg_id: str, body: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_member(conn, conv_id, user_id)
            row = await self._own_message(conn, conv_id, msg_id, user_id)
            if row["kind"] != "text":
                raise ApiError(Code.BAD_REQUEST, "only text messages can be edited")
            key = await self._key_for(conv_id, conn)
            row = await store.update_body(
                conn, msg_id, seal(key, body.encode(), self._aad(conv_id, msg_id))
            )
        wire = self._wire(key, conv_id, row)
        await self.node.fanout.emit("message:updated", wire, namespace=NS, room=room(conv_id))
        return wire

    async def delete(self, user_id: str, conv_id: str, msg_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_member(conn, conv_id, user_id)
            await self._own_message(conn, conv_id, msg_id, user_id)
            row = await store.tombstone(conn, msg_id)
        info = {"conversation_id": conv_id, "id": msg_id, "seq": row["seq"]}
        await self.node.fanout.emit("message:deleted", info, namespace=NS, room=room(conv_id))
        return info

    async def _own_message(self, conn: Any, conv_id: str, msg_id: str, user_id: str) -> Any:
        row = await store.message(conn, conv_id, msg_id, lock=True)
        if row is None or row["deleted_at"] is not None:
            raise ApiError(Code.NOT_FOUND, "no such message")
        if row["sender_id"] != user_id:
            raise ApiError(Code.FORBIDDEN, "only the sender can change a message")
        return row

    # -- receipts and typing ----------------------------------------------------------------

    async def mark(self, user_id: str, conv_id: str, seq: int, column: str) -> dict[str, Any]:
        conv = await store.conversation(self.db, conv_id)
        if conv is None:
            raise ApiError(Code.NOT_FOUND, "no such conversation")
        seq = min(seq, conv["last_seq"])
        cursor = await store.advance_cursor(self.db, conv_id, user_id, column, seq)
        if cursor is None:
            raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
        receipt = {
            "conversation_id": conv_id,
            "user_id": user_id,
            "seq": cursor[column],
        }
        event = "message:read" if column == "read_seq" else "message:delivered"
        await self.node.fanout.emit(event, receipt, namespace=NS, room=room(conv_id))
        unread = await store.unread(self.db, conv_id, user_id)
        if column == "read_seq":  # every device of the reader shows the same count
            await self.node.fanout.emit(
                "conversation:unread",
                {"conversation_id": conv_id, "unread": unread, "read_seq": cursor["read_seq"]},
                namespace=NS,
                room=f"user:{user_id}",
            )
            if cursor["read_seq"] > 0:
                await self.node.bus.publish(
                    build_event(
                        {
                            "type": "message.read",
                            "actor": user_id,
                            "payload": {
                                "conversation_id": conv_id,
                                "reader_id": user_id,
                                "seq": cursor["read_seq"],
                            },
                        }
                    )
                )
        return {**receipt, "unread": unread}

    async def typing(self, user_id: str, conv_id: str, active: bool, skip_sid: str) -> bool:
        """Broadcast typing at most once per TYPING_INTERVAL; a start expires by itself."""
        await self._require_member(self.db, conv_id, user_id)
        k = (conv_id, user_id)
        loop = asyncio.get_running_loop()
        timer = self._typing_expiry.pop(k, None)
        if timer is not None:
            timer.cancel()
        now = time.monotonic()
        if active:
            self._typing_expiry[k] = loop.call_later(
                TYPING_EXPIRY, lambda: asyncio.ensure_future(self._typing_expired(k))
            )
            if now - self._typing_sent.get(k, 0.0) < TYPING_INTERVAL:
                return False  # debounced
        self._typing_sent[k] = now if active else 0.0
        await self._emit_typing(conv_id, user_id, active, skip_sid)
        return True

    async def _typing_expired(self, k: tuple[str, str]) -> None:
        self._typing_expiry.pop(k, None)
        self._typing_sent.pop(k, None)
        await self._emit_typing(k[0], k[1], False, None)

    async def _emit_typing(
        self, conv_id: str, user_id: str, active: bool, skip_sid: str | None
    ) -> None:
        await self.node.fanout.emit(
            "typing",
            {"conversation_id": conv_id, "user_id": user_id, "active": active},
            namespace=NS,
            room=room(conv_id),
            skip_sid=skip_sid,
            volatile=True,
        )

    # -- HOURS --------------------------------------------------------------------------

    async def tip(
        self,
        user_id: str,
        conv_id: str,
        amount: Decimal,
        client_msg_id: str,
        to_user: str | None,
        skip_sid: str | None,
    ) -> dict[str, Any]:
        idem = f"tip:{user_id}:{conv_id}:{client_msg_id}"
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_member(conn, conv_id, user_id)
            members = await store.member_ids(conn, conv_id)
            others = [m for m in members if m != user_id]
            if to_user is None:
                if len(others) != 1:
                    raise ApiError(Code.BAD_REQUEST, "in a circle, say to_user")
                to_user = others[0]
            if to_user not in others:
                raise ApiError(Code.BAD_REQUEST, "to_user must be another member")
            seq = await store.next_seq(conn, conv_id)
            done = await store.transfer_by_key(conn, idem)
            if done is not None:
                raise _Duplicate(await store.message(conn, conv_id, str(done["message_id"])))
            key = await self._key_for(conv_id, conn)
            msg_id = str(uuid.uuid4())
            try:
                async with conn.transaction():  # savepoint: the overdraft CHECK may fire
                    await store.move_hours(
                        conn,
                        "tip",
                        account(user_id),
                        account(to_user),
                        amount,
                        idem,
                        user_id,
                        conv_id,
                        msg_id,
                    )
            except asyncpg.CheckViolationError:
                raise ApiError(Code.CONFLICT, "insufficient HOURS balance") from None
            text = f"tipped {amount.normalize():f} HOURS"
            row = await store.insert_message(
                conn,
                msg_id,
                conv_id,
                seq,
                user_id,
                client_msg_id,
                "tip",
                seal(key, text.encode(), self._aad(conv_id, msg_id)),
                None,
                amount,
            )
            balance = await store.balance(conn, account(user_id))
        wire = self._wire(key, conv_id, row)
        await self._announce(wire, members, skip_sid)
        await self.node.bus.publish(
            build_event(
                {
                    "type": "hours.tipped",
                    "actor": user_id,
                    "payload": {
                        "from_user": user_id,
                        "to_user": to_user,
                        "amount": str(amount),
                        "conversation_id": conv_id,
                    },
                }
            )
        )
        return {"id": wire["id"], "seq": wire["seq"], "ts": wire["ts"], "balance": float(balance)}

    async def tip_idempotent(self, *args: Any) -> dict[str, Any]:
        try:
            return await self.tip(*args)
        except _Duplicate as dup:
            row = dup.row
            bal = await store.balance(self.db, account(row["sender_id"]))
            return {
                "id": str(row["id"]),
                "seq": row["seq"],
                "ts": row["created_at"].isoformat(),
                "balance": float(bal),
                "duplicate": True,
            }

    async def balance(self, user_id: str) -> dict[str, Any]:
        bal = await store.balance(self.db, account(user_id))
        return {"user_id": user_id, "balance": float(bal), "tier": tier(bal)}

    async def grant(self, admin: str, user_id: str, amount: Decimal, key: str) -> Decimal:
        async with self.db.acquire() as conn, conn.transaction():
            if await store.transfer_by_key(conn, key) is None:
                await store.move_hours(conn, "grant", MINT, account(user_id), amount, key, admin)
                await self.node.audit.record(
                    admin,
                    "hours.grant",
                    f"user:{user_id}",
                    None,
                    {"amount": str(amount)},
                    conn=conn,
                )
            return await store.balance(conn, account(user_id))

    # -- scheduled notes --------------------------------------------------------------------

    async def schedule(
        self, user_id: str, conv_id: str, body: str, deliver_at: datetime
    ) -> dict[str, Any]:
        if deliver_at <= datetime.now(UTC) - timedelta(seconds=5):
            raise ApiError(Code.BAD_REQUEST, "deliver_at is in the past")
        note_id = str(uuid.uuid4())
        async with self.db.acquire() as conn, conn.transaction():
            await self._require_member(conn, conv_id, user_id)
            key = await self._key_for(conv_id, conn)
            sealed = seal(key, body.encode(), f"note|{conv_id}|{note_id}".encode())
            row = await store.insert_scheduled(conn, note_id, conv_id, user_id, sealed, deliver_at)
            await self.node.scheduler.schedule(
                "message.scheduled", f"note:{note_id}", deliver_at, {"id": note_id}, conn=conn
            )
        return self._note(row, None)

    async def deliver_scheduled(self, payload: dict[str, Any]) -> None:
        """Scheduler job: send a due note once (the state row guards against repeats)."""
        note_id = payload["id"]
        async with self.db.acquire() as conn, conn.transaction():
            note = await store.scheduled(conn, note_id, lock=True)
            if note is None or note["state"] != "scheduled":
                return
            conv_id = str(note["conversation_id"])
            if await store.member(conn, conv_id, note["sender_id"]) is None:
                await store.set_scheduled_state(conn, note_id, "cancelled")
                return
            key = await self._key_for(conv_id, conn)
            body = unseal(key, note["body"], f"note|{conv_id}|{note_id}".encode())
            seq = await store.next_seq(conn, conv_id)
            msg_id = str(uuid.uuid4())
            row = await store.insert_message(
                conn,
                msg_id,
                conv_id,
                seq,
                note["sender_id"],
                f"note:{note_id}",
                "note",
                seal(key, body, self._aad(conv_id, msg_id)),
                None,
            )
            await store.set_scheduled_state(conn, note_id, "sent", msg_id, seq)
            members = await store.member_ids(conn, conv_id)
        await self._announce(self._wire(key, conv_id, row), members, None)

    async def scheduled(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await store.scheduled_of(self.db, user_id, limit)
        return [self._note(r, r["recipients"]) for r in rows]

    async def cancel_scheduled(self, user_id: str, note_id: str) -> dict[str, Any]:
        async with self.db.acquire() as conn, conn.transaction():
            note = await store.scheduled(conn, note_id, lock=True)
            if note is None or note["sender_id"] != user_id:
                raise ApiError(Code.NOT_FOUND, "no such scheduled message")
            if note["state"] != "scheduled":
                raise ApiError(Code.CONFLICT, f"already {note['state']}")
            await store.set_scheduled_state(conn, note_id, "cancelled")
            await self.node.scheduler.cancel(f"note:{note_id}", conn=conn)
        return {"id": note_id, "state": "cancelled"}

    def _note(self, row: Any, recipients: list[dict[str, Any]] | None) -> dict[str, Any]:
        status = []
        for r in recipients or []:
            if row["state"] != "sent":
                state = row["state"]
            elif r["read_seq"] >= row["seq"]:
                state = "read"
            elif r["delivered_seq"] >= row["seq"]:
                state = "delivered"
            else:
                state = "sent"
            status.append({"user_id": r["user_id"], "state": state})
        return {
            "id": str(row["id"]),
            "conversation_id": str(row["conversation_id"]),
            "deliver_at": row["deliver_at"].isoformat(),
            "state": row["state"],
            "message_id": str(row["message_id"]) if row["message_id"] else None,
            "seq": row["seq"],
            "recipients": status,
        }

    # -- key rotation -----------------------------------------------------------------------

    async def rotate_keys(self) -> int:
        """Re-wrap every conversation's data key with the current master key."""
        count = 0
        for r in await store.all_wrapped_keys(self.db):
            if r["key_id"] == self.keyring.key_id:
                continue
            conv_id = str(r["id"])
            data_key = self.keyring.unwrap(r["wrapped_key"], conv_id.encode())
            await store.rewrap(
                self.db,
                conv_id,
                self.keyring.wrap(data_key, conv_id.encode()),
                self.keyring.key_id,
            )
            count += 1
        return count


def tier(balance: Decimal) -> str:
    for floor, name in ((Decimal(1000), "gold"), (Decimal(100), "silver"), (Decimal(10), "bronze")):
        if balance >= floor:
            return name
    return "starter"


class _Duplicate(Exception):
    """A retry of something already done (same client_msg_id); carries the first row."""

    def __init__(self, row: Any) -> None:
        super().__init__("duplicate")
        self.row = row
