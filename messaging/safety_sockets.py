"""Socket handlers of /messages for blocks and mutes (messaging/blocks.py, messaging/mutes.py):
`user:block`, `user:unblock`, `user:blocked`, `conversation:mute`, `conversation:unmute`.
A mixin of the namespace (namespaces/messages.py) beside `MessageHandlers`."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from pydantic import AwareDatetime

from messaging.blocks import BlockChanged, BlockedList
from messaging.mutes import MuteChanged
from messaging.service import Messaging
from messaging.sockets import ConvReq, Req, UserId
from server.auth import Principal
from server.errors import Code
from server.sockets import NoPayload, handles


class BlockReq(Req):
    user_id: UserId


class MuteReq(ConvReq):
    until: AwareDatetime | None = None


class SafetyHandlers:
    """Mixin of /messages: `messaging` is handed in by the namespace."""

    messaging: Messaging

    @handles("user:block", BlockReq, ack=BlockChanged, example={"user_id": "u_bob"})
    async def user_block(self, sid: str, p: Principal, req: BlockReq) -> Any:
        """Block a user: no direct messages, tips, mentions, typing or presence between you,
        either way, until you unblock (blocking again changes nothing)."""
        return await self.messaging.blocks.block(p.user_id, req.user_id)

    @handles("user:unblock", BlockReq, ack=BlockChanged, example={"user_id": "u_bob"})
    async def user_unblock(self, sid: str, p: Principal, req: BlockReq) -> Any:
        """Lift your block of a user (a block they made of you stays)."""
        return await self.messaging.blocks.unblock(p.user_id, req.user_id)

    @handles("user:blocked", ack=BlockedList)
    async def user_blocked(self, sid: str, p: Principal, _: NoPayload) -> Any:
        """The users you block, latest first."""
        return await self.messaging.blocks.blocked(p.user_id)

    @handles(
        "conversation:mute",
        MuteReq,
        ack=MuteChanged,
        errors=(Code.FORBIDDEN,),
        example={"conversation_id": "<conversation_id>", "until": "2030-06-01T09:00:00+02:00"},
    )
    async def conversation_mute(self, sid: str, p: Principal, req: MuteReq) -> Any:
        """Mute a conversation (until `until`, or until you unmute): no push, email, SMS or
        Telegram for its messages; in-app and unread counts stay."""
        until = req.until.astimezone(UTC) if req.until else None
        return await self.messaging.mutes.mute(p.user_id, str(req.conversation_id), until)

    @handles(
        "conversation:unmute",
        ConvReq,
        ack=MuteChanged,
        errors=(Code.FORBIDDEN,),
        example={"conversation_id": "<conversation_id>"},
    )
    async def conversation_unmute(self, sid: str, p: Principal, req: ConvReq) -> Any:
        """Unmute a conversation."""
        return await self.messaging.mutes.unmute(p.user_id, str(req.conversation_id))
