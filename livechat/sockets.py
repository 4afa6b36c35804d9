"""Live chat events on /live, room `live:{id}`: send and history, slow mode, moderation
(delete, timeout, ban, unban) and reactions. Sending, reacting and reading history need the
socket in the room (room:join); a user banned from a live's chat cannot join its room, on
room:join or on connection state recovery."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from livechat.reactions import Kind
from livechat.service import (
    HISTORY,
    MAX_BODY,
    MAX_SLOW_MODE_S,
    MAX_TIMEOUT_S,
    LiveChat,
    live_room,
)
from server.auth import Principal
from server.errors import ApiError, Code
from server.sockets import JoinRequest, handles

if TYPE_CHECKING:
    from server.sockets import RoomsNamespace as _Base
else:
    _Base = object

LiveId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
]
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Reason = Annotated[str, StringConstraints(max_length=200, strip_whitespace=True)]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LiveReq(Req):
    live_id: LiveId


class SendReq(LiveReq):
    client_msg_id: ClientMsgId
    body: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_BODY, strip_whitespace=True)
    ]

    @field_validator("body")
    @classmethod
    def _printable(cls, v: str) -> str:
        if CONTROL.search(v):
            raise ValueError("control characters are not allowed (newlines and tabs are)")
        return v


class HistoryReq(LiveReq):
    limit: Annotated[int, Field(ge=1, le=HISTORY)] = HISTORY
    before: uuid.UUID | None = None  # a message id: the page before it


class SlowModeReq(LiveReq):
    seconds: Annotated[int, Field(ge=0, le=MAX_SLOW_MODE_S)]  # 0 turns slow mode off
    reason: Reason | None = None


class DeleteReq(LiveReq):
    message_id: uuid.UUID
    reason: Reason | None = None


class TimeoutReq(LiveReq):
    user_id: UserId
    seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)]
    reason: Reason | None = None


class UserReq(LiveReq):
    user_id: UserId
    reason: Reason | None = None


class ReactReq(LiveReq):
    kind: Kind


class ChatHandlers(_Base):
    """Mixin of /live: one thin handler per live chat event."""

    chat: LiveChat  # handed in by the namespace (namespaces/live.py)

    def _require_joined(self, sid: str, live_id: str) -> None:
        # one lookup in the manager's room map (rooms_of scans every room of the namespace,
        # which costs O(viewers) per message in a big live)
        members = self.server.manager.rooms.get(self.namespace, {}).get(live_room(live_id), ())
        if sid not in members:
            raise ApiError(Code.FORBIDDEN, f"join live:{live_id} first (room:join)")

    # -- room rules: a banned user stays out of the live's room ----------------------------

    async def may_enter(self, principal: Principal, room: str) -> bool:
        if not await super().may_enter(principal, room):
            return False
        kind, _, live_id = room.partition(":")
        return kind != "live" or await self.chat.may_enter(principal.user_id, live_id)

    async def room_join(self, sid: str, principal: Principal, req: JoinRequest) -> dict[str, Any]:
        kind, _, live_id = req.room.partition(":")
        if (
            kind == "live"
            and await super().may_enter(principal, req.room)  # well-formed: ask the chat
            and not await self.chat.may_enter(principal.user_id, live_id)
        ):
            raise ApiError(
                Code.FORBIDDEN, "you are banned from this live's chat", {"reason": "banned"}
            )
        return await super().room_join(sid, principal, req)

    # -- chat -------------------------------------------------------------------------------

    @handles("chat:send", SendReq)
    async def chat_send(self, sid: str, principal: Principal, req: SendReq) -> Any:
        self._require_joined(sid, req.live_id)
        return await self.chat.send(principal.user_id, req.live_id, req.client_msg_id, req.body)

    @handles("chat:history", HistoryReq)
    async def chat_history(self, sid: str, principal: Principal, req: HistoryReq) -> Any:
        self._require_joined(sid, req.live_id)
        return await self.chat.history(req.live_id, req.limit, req.before)

    # -- moderation (the live's host, moderators, admins) --------------------------------

    @handles("chat:slowmode", SlowModeReq)
    async def chat_slowmode(self, sid: str, principal: Principal, req: SlowModeReq) -> Any:
        return await self.chat.set_slow_mode(principal, req.live_id, req.seconds, req.reason)

    @handles("chat:delete", DeleteReq)
    async def chat_delete(self, sid: str, principal: Principal, req: DeleteReq) -> Any:
        return await self.chat.delete(principal, req.live_id, req.message_id, req.reason)

    @handles("chat:timeout", TimeoutReq)
    async def chat_timeout(self, sid: str, principal: Principal, req: TimeoutReq) -> Any:
        return await self.chat.timeout(principal, req.live_id, req.user_id, req.seconds, req.reason)

    @handles("chat:ban", UserReq)
    async def chat_ban(self, sid: str, principal: Principal, req: UserReq) -> Any:
        return await self.chat.ban(principal, req.live_id, req.user_id, req.reason)

    @handles("chat:unban", UserReq)
    async def chat_unban(self, sid: str, principal: Principal, req: UserReq) -> Any:
        return await self.chat.unban(principal, req.live_id, req.user_id, req.reason)

    # -- reactions --------------------------------------------------------------------------

    @handles("reaction:send", ReactReq)
    async def reaction_send(self, sid: str, principal: Principal, req: ReactReq) -> Any:
        self._require_joined(sid, req.live_id)
        await self.chat.react(req.live_id, req.kind)
        return {"live_id": req.live_id, "kind": req.kind}
