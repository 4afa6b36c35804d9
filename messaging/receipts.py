"""Receipts and typing. A member's delivered and read cursors only move forward (read implies
delivered); each move is told to the conversation (`message:delivered`, `message:read`), a read
also to the reader's other devices (`conversation:unread`) and to the bus (`message.read`).
Typing is volatile: broadcast at most once per `TYPING_INTERVAL`, and a start that is not
renewed stops by itself after `TYPING_EXPIRY`. Where there is a block (messaging/blocks.py)
between the typist and a member, that member is not told (the others are, through their user
rooms); in a direct conversation with a block, cursor moves are told to the reader's devices
only. Receipts are written in batches, as sends are (messaging/group_commit.py): several of one
member in one batch are merged, the furthest cursor wins, and each is answered with the cursor
after the batch."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from messaging.blocks import Blocks
from messaging.conversations import NS, require_member, room
from messaging.group_commit import GroupCommit
from messaging.store import MessagingStore, Receipt
from server.bus import Bus
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.events import build_event
from server.fanout import Fanout
from server.server_events import server_event

TYPING_INTERVAL = 2.0  # seconds between typing broadcasts per user (seed: debounce 2 s)
TYPING_EXPIRY = 5.0  # a start expires by itself after this


class ReceiptMoved(Outgoing):
    """`message:delivered` / `message:read`: a member's cursor moved."""

    conversation_id: str
    user_id: str = Field(description="the member whose cursor moved")
    seq: int = Field(description="the cursor now: every message up to this seq")


class ReceiptMarked(ReceiptMoved):
    """The ack of `message:read` and `message:delivered`: the cursor after, and your unread
    count."""

    unread: int = Field(description="messages of others after your read cursor, not deleted")


class UnreadCount(Outgoing):
    """`conversation:unread`: the reader's unread count and read cursor, to all their devices."""

    conversation_id: str
    unread: int
    read_seq: int


class Typing(Outgoing):
    """`typing`: a member started or stopped typing."""

    conversation_id: str
    user_id: str
    active: bool = Field(description="false: stopped (or a start expired after 5 s)")


_RECEIPT_EXAMPLE = {"conversation_id": "<conversation_id>", "user_id": "u_bob", "seq": 7}
MESSAGE_DELIVERED = server_event(
    "message:delivered",
    ReceiptMoved,
    namespaces=(NS,),
    summary="A member's delivered cursor moved: they got every message up to `seq`",
    example=_RECEIPT_EXAMPLE,
)
MESSAGE_READ = server_event(
    "message:read",
    ReceiptMoved,
    namespaces=(NS,),
    summary="A member's read cursor moved: they read every message up to `seq`",
    example=_RECEIPT_EXAMPLE,
)
#: the event each receipt is told with
RECEIPT_EVENT: dict[Receipt, str] = {"delivered": MESSAGE_DELIVERED, "read": MESSAGE_READ}
CONVERSATION_UNREAD = server_event(
    "conversation:unread",
    UnreadCount,
    namespaces=(NS,),
    summary="To the reader's devices: after a read, the conversation's unread count and read"
    " cursor (every device shows the same)",
    example={"conversation_id": "<conversation_id>", "unread": 0, "read_seq": 7},
)
TYPING = server_event(
    "typing",
    Typing,
    namespaces=(NS,),
    summary="A member started or stopped typing (volatile: not kept for recovery)",
    example={"conversation_id": "<conversation_id>", "user_id": "u_bob", "active": True},
)


@dataclass(frozen=True, slots=True)
class Mark:
    """One `message:read` / `message:delivered`, as the batch writer takes it."""

    user_id: str
    conv_id: str
    seq: int
    receipt: Receipt


class Receipts:
    def __init__(self, store: MessagingStore, fanout: Fanout, bus: Bus, blocks: Blocks) -> None:
        self.store = store
        self.fanout = fanout
        self.bus = bus
        self.blocks = blocks
        self._marks: GroupCommit[Mark, dict[str, Any]] = GroupCommit(self._mark_batch)
        self._typing_sent: dict[tuple[str, str], float] = {}
        self._typing_expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}

    async def mark(self, user_id: str, conv_id: str, seq: int, receipt: Receipt) -> dict[str, Any]:
        """Move the user's `receipt` cursor to `seq` (at most the last message). Receipts that
        arrive together are written together (`_mark_batch`)."""
        return await self._marks.submit(Mark(user_id, conv_id, seq, receipt))

    async def _mark_batch(self, marks: list[Mark]) -> list[dict[str, Any] | ApiError]:
        """A batch of receipts: one statement each for the conversations, the cursor moves
        (several marks of one member merged: the furthest delivered and read), the blocks of
        direct conversations and the unread counts; a mark for a conversation that does not
        exist, or by a non-member, fails alone. Then each is told as a lone mark is, and the
        batch's `message.read` events are published together."""
        conv_ids = sorted({m.conv_id for m in marks})
        answers: list[dict[str, Any] | ApiError] = []
        async with self.store.transaction() as conn:
            convs = await self.store.conversations(conn, conv_ids)
            moves: dict[tuple[str, str], tuple[int, int]] = {}
            for m in marks:
                conv = convs.get(m.conv_id)
                if conv is None:
                    continue
                seq = min(m.seq, conv["last_seq"])
                d, r = moves.get((m.conv_id, m.user_id), (0, 0))
                moves[(m.conv_id, m.user_id)] = (
                    max(d, seq),
                    max(r, seq) if m.receipt == "read" else r,
                )
            cursors = await self.store.advance_cursors(conn, moves)
            direct = [c for c in conv_ids if c in convs and convs[c]["kind"] == "direct"]
            members = await self.store.members_of(conn, direct) if direct else {}
            pairs = sorted(
                {(u, o) for (c, u) in cursors if c in members for o in members[c] if o != u}
            )
            blocked = await self.blocks.blocked_pairs(conn, pairs)
            unread = await self.store.unread_many(conn, list(cursors))
        events = []
        for m in marks:
            k = (m.conv_id, m.user_id)
            if m.conv_id not in convs:
                answers.append(ApiError(Code.NOT_FOUND, "no such conversation"))
                continue
            if k not in cursors:
                answers.append(
                    ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
                )
                continue
            at = cursors[k]
            told = {"conversation_id": m.conv_id, "user_id": m.user_id, "seq": at[m.receipt]}
            to = room(m.conv_id)
            if any((m.user_id, o) in blocked for o in members.get(m.conv_id, ())):
                to = f"user:{m.user_id}"  # nothing reaches the other side of a block
            await self.fanout.emit(RECEIPT_EVENT[m.receipt], told, namespace=NS, room=to)
            if m.receipt == "read":  # every device of the reader shows the same count
                await self.fanout.emit(
                    CONVERSATION_UNREAD,
                    {"conversation_id": m.conv_id, "unread": unread[k], "read_seq": at["read"]},
                    namespace=NS,
                    room=f"user:{m.user_id}",
                )
                if at["read"] > 0:
                    events.append(
                        build_event(
                            {
                                "type": "message.read",
                                "actor": m.user_id,
                                "payload": {
                                    "conversation_id": m.conv_id,
                                    "reader_id": m.user_id,
                                    "seq": at["read"],
                                },
                            }
                        )
                    )
            answers.append({**told, "unread": unread[k]})
        await self.bus.publish_many(events)
        return answers

    async def typing(self, user_id: str, conv_id: str, active: bool, skip_sid: str) -> bool:
        """Broadcast typing at most once per TYPING_INTERVAL; a start expires by itself."""
        await require_member(self.store, self.store.db, conv_id, user_id)
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
        to: str | list[str] = room(conv_id)
        hidden = await self.blocks.hidden_in(conv_id, user_id)
        if hidden:  # to each member's devices but theirs (the typist's other devices too)
            members = await self.store.member_ids(self.store.db, conv_id)
            to = [f"user:{m}" for m in members if m not in hidden]
        await self.fanout.emit(
            TYPING,
            {"conversation_id": conv_id, "user_id": user_id, "active": active},
            namespace=NS,
            room=to,
            skip_sid=skip_sid,
            volatile=True,
        )
