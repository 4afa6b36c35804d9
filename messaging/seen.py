"""Seen-by: which members have read a message, and which have it but not read it yet, from
their cursors (messaging/receipts.py: a member who read up to `seq` has seen every message up
to it). The message's sender is not listed, nor members who joined after it (their cursors
start past it, but they never had it). Any member may ask: the cursors are already told to the
conversation (`message:read`, `message:delivered`); a circle has at most 150 members, so the
answer is one short query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from messaging.conversations import require_member
from messaging.expression_store import ExpressionStore
from messaging.store import MessagingStore
from server.contract import Outgoing
from server.errors import ApiError, Code


class SeenMember(Outgoing):
    user_id: str
    read_seq: int = Field(description="their read cursor")


class DeliveredMember(Outgoing):
    user_id: str
    delivered_seq: int = Field(description="their delivered cursor")


class SeenBy(Outgoing):
    """The ack of `message:seen_by`."""

    conversation_id: str
    seq: int
    message_id: str
    sender_id: str
    seen_by: list[SeenMember] = Field(
        description="members whose read cursor reached `seq`, furthest first"
    )
    delivered_to: list[DeliveredMember] = Field(
        description="members who got it (delivered cursor reached `seq`) but have not read it"
    )
    of: int = Field(description="how many members besides its sender could see it")


@dataclass(eq=False)
class Seen:
    messaging: MessagingStore
    store: ExpressionStore

    async def seen_by(self, user_id: str, conv_id: str, seq: int) -> dict[str, Any]:
        member = await require_member(self.messaging, self.messaging.db, conv_id, user_id)
        msg = await self.store.message_at(conv_id, seq) if seq > member["joined_seq"] else None
        if msg is None:
            raise ApiError(Code.NOT_FOUND, "no such message")
        rows = await self.store.cursors_past(conv_id, seq, msg["sender_id"])
        return {
            "conversation_id": conv_id,
            "seq": seq,
            "message_id": str(msg["id"]),
            "sender_id": msg["sender_id"],
            "seen_by": [
                {"user_id": r["user_id"], "read_seq": r["read_seq"]}
                for r in rows
                if r["read_seq"] >= seq
            ],
            "delivered_to": [
                {"user_id": r["user_id"], "delivered_seq": r["delivered_seq"]}
                for r in rows
                if r["read_seq"] < seq <= r["delivered_seq"]
            ],
            "of": len(rows),
        }
