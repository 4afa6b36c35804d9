"""HOURS tips in a conversation: the transfer on the HOURS ledger and the `tip` message it
posts commit together, in one transaction; a retry (same sender, conversation and
`client_msg_id`) moves nothing twice and answers with the first tip (`duplicate: true`).

The ledger is another feature's: tips reach it through `TipLedger`, which the composition root
(app.py) fills with `ledger.service.Ledger`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import asyncpg
from pydantic import Field

from messaging.conversations import require_member
from messaging.keys import ConversationKeys
from messaging.messages import MessagePosted, Messages, Posted, posted, wire
from messaging.store import MessagingStore
from server.bus import Bus
from server.errors import ApiError, Code
from server.events import build_event


class TipLedger(Protocol):
    """The HOURS ledger as tips use it, inside the tip's transaction (`conn`)."""

    async def tipped(self, conn: asyncpg.Connection, key: str) -> str | None:
        """The message of the tip already made under `key`, if there is one."""
        ...

    async def tip(
        self,
        conn: asyncpg.Connection,
        key: str,
        sender: str,
        recipient: str,
        amount: Decimal,
        conversation_id: str,
        message_id: str,
    ) -> Decimal:
        """Move `amount` from sender to recipient (`conflict` when the sender's balance is
        short); the sender's balance after."""
        ...

    async def balance_of(self, conn: asyncpg.Connection, user_id: str) -> Decimal: ...


class Tipped(Posted):
    balance: float  # the sender's HOURS balance after the tip


class TipPosted(MessagePosted):
    """The ack of `tip:send`: the tip's message (`Tipped`) and your HOURS balance after."""

    balance: float = Field(description="your HOURS balance after the tip (now, on a retry)")


@dataclass(eq=False)
class Tips:
    store: MessagingStore
    keys: ConversationKeys
    messages: Messages
    ledger: TipLedger
    bus: Bus

    async def tip(
        self,
        user_id: str,
        conv_id: str,
        amount: Decimal,
        client_msg_id: str,
        to_user: str | None,
        skip_sid: str | None,
    ) -> Tipped:
        """Tip `to_user` (in a direct conversation: the other member) and post the tip."""
        idem = f"tip:{user_id}:{conv_id}:{client_msg_id}"  # ledger/store.py erases by this shape
        async with self.store.transaction() as conn:
            await require_member(self.store, conn, conv_id, user_id, lock_conversation=True)
            members = await self.store.member_ids(conn, conv_id)
            others = [m for m in members if m != user_id]
            if to_user is None:
                if len(others) != 1:
                    raise ApiError(Code.BAD_REQUEST, "in a circle, say to_user")
                to_user = others[0]
            if to_user not in others:
                raise ApiError(Code.BAD_REQUEST, "to_user must be another member")
            await self.messages.blocks.refuse_between(user_id, to_user, conn)
            done = await self.ledger.tipped(conn, idem)
            if done is not None:
                first = await self.store.message(conn, conv_id, done)
                balance = await self.ledger.balance_of(conn, user_id)
                return Tipped(**posted(first, duplicate=True), balance=float(balance))
            key = await self.keys.key(conv_id, conn)
            msg_id = str(uuid.uuid4())
            balance = await self.ledger.tip(conn, idem, user_id, to_user, amount, conv_id, msg_id)
            text = f"tipped {amount.normalize():f} HOURS"
            row = await self.messages.post(
                conn,
                key,
                conv_id,
                msg_id,
                user_id,
                client_msg_id,
                "tip",
                text.encode(),
                None,
                amount,
            )
        await self.messages.announce(wire(key, conv_id, row), members, skip_sid)
        await self.bus.publish(
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
        return Tipped(**posted(row), balance=float(balance))
