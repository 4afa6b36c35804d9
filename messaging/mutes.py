"""Muted conversations. A member who mutes a conversation (until they unmute, or until a time)
gets no push, email, SMS or Telegram for its messages; they still get `message:new`, the
in-app notification and the unread count. Messaging says who muted in each `message.sent`
(`muted`, computed when it is published) and the router keeps those recipients in-app
(routing/priorities.py, `in_app_only`). A mention still pushes (messaging/mentions.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field

from messaging.blocks_store import BlocksStore
from messaging.store import MessagingStore
from server.clock import utcnow
from server.contract import Outgoing
from server.errors import ApiError, Code


class MuteChanged(Outgoing):
    """The ack of `conversation:mute` and `conversation:unmute`."""

    conversation_id: str
    muted: bool
    until: str | None = Field(description="ISO 8601 end of the mute; null: until unmuted")


@dataclass(eq=False)
class Mutes:
    store: MessagingStore
    blocks: BlocksStore

    async def mute(self, user_id: str, conv_id: str, until: datetime | None) -> dict[str, Any]:
        if until is not None and until <= utcnow():
            raise ApiError(Code.BAD_REQUEST, "until is in the past")
        async with self.store.transaction() as conn:
            await self._member(conn, conv_id, user_id)
            await self.blocks.mute(conn, conv_id, user_id, until)
        return {
            "conversation_id": conv_id,
            "muted": True,
            "until": until.isoformat() if until else None,
        }

    async def unmute(self, user_id: str, conv_id: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            await self._member(conn, conv_id, user_id)
            await self.blocks.unmute(conn, conv_id, user_id)
        return {"conversation_id": conv_id, "muted": False, "until": None}

    async def _member(self, conn: Any, conv_id: str, user_id: str) -> None:
        if await self.store.member(conn, conv_id, user_id) is None:
            raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")

    async def muted_in(self, conv_id: str, now: datetime | None = None) -> list[str]:
        """Who has the conversation muted now (or at `now`)."""
        return await self.blocks.muted_in(conv_id, now or utcnow())

    async def muted_in_many(self, conv_ids: list[str]) -> dict[str, list[str]]:
        """`muted_in` for many conversations at once (a batch's sends): only those with any."""
        if not conv_ids:
            return {}
        return await self.blocks.muted_in_many(conv_ids, utcnow())

    async def of_user(self, user_id: str) -> dict[str, datetime | None]:
        """The user's mutes in force: conversation id -> until (None: until unmuted)."""
        return await self.blocks.mutes_of(user_id, utcnow())
