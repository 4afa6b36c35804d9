"""Live chat events on /live, room `live:{id}`: send and history, slow mode, moderation
(delete, timeout, ban, unban) and reactions. Sending, reacting and reading history need the
socket in the room (room:join); a user banned from a live's chat cannot join its room, on
room:join or on connection state recovery."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from livechat.reactions import Kind
from livechat.service import (
    HISTORY,
    MAX_BODY,
    MAX_SLOW_MODE_S,
    MAX_TIMEOUT_S,
    ChatMessage,
    ChatSlowMode,
    LiveChat,
    live_room,
)
from server.auth import Principal
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.sockets import Joined, JoinRequest, handles

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


# -- acks -------------------------------------------------------------------------------------


class ChatSent(Outgoing):
    id: str = Field(description="the message's id (a UUID)")
    ts: str = Field(description="when it was stored (ISO 8601)")
    duplicate: bool | None = Field(
        None,
        description="true: this client_msg_id was sent before; this is the first send's id"
        " and nothing new went out",
    )


class ChatHistory(Outgoing):
    live_id: str
    state: Literal["live", "ended", "none"] = Field(
        description="none: no live.started seen for this live"
    )
    slow_mode_s: int = Field(description="the slow mode in seconds (0: off)")
    messages: list[ChatMessage] = Field(description="oldest first; deleted ones left out")


class ChatDeleted(Outgoing):
    live_id: str
    message_id: str
    deleted: Literal[True] = Field(description="also when it was deleted before")


class ChatTimedOut(Outgoing):
    live_id: str
    user_id: str
    until: str = Field(description="when the timeout ends (ISO 8601)")


class ChatBanned(Outgoing):
    live_id: str
    user_id: str
    banned: Literal[True]


class ChatUnbanned(Outgoing):
    live_id: str
    user_id: str
    lifted: Literal["timeout", "ban"] | None = Field(
        description="what was lifted; null when the user had no ban or timeout here"
    )


class ReactionSent(Outgoing):
    live_id: str
    kind: Kind


EXAMPLE_LIVE = "jazz-night"  # the live id of the examples


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

    @handles(
        "room:join",
        JoinRequest,
        ack=Joined,
        errors=(Code.FORBIDDEN,),
        example={"room": f"live:{EXAMPLE_LIVE}"},
    )
    async def room_join(self, sid: str, principal: Principal, req: JoinRequest) -> dict[str, Any]:
        """Join an open room (zone:, content:, live:); with `since`, replay what was missed.

        A user banned from a live's chat is refused its `live:` room (forbidden, reason
        banned)."""
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

    @handles(
        "chat:send",
        SendReq,
        ack=ChatSent,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND, Code.CONFLICT),
        example={"live_id": EXAMPLE_LIVE, "client_msg_id": "c-0001", "body": "what a solo!"},
    )
    async def chat_send(self, sid: str, principal: Principal, req: SendReq) -> Any:
        """Send a message to a live's chat (idempotent on `client_msg_id`); needs room:join.

        Refused while slow mode holds (rate_limited, reason slow_mode), while timed out or
        banned (forbidden), when the live has ended (conflict) or was never on (not_found)."""
        self._require_joined(sid, req.live_id)
        return await self.chat.send(principal.user_id, req.live_id, req.client_msg_id, req.body)

    @handles(
        "chat:history",
        HistoryReq,
        ack=ChatHistory,
        errors=(Code.FORBIDDEN,),
        example={"live_id": EXAMPLE_LIVE, "limit": 20},
    )
    async def chat_history(self, sid: str, principal: Principal, req: HistoryReq) -> Any:
        """Read a live's latest messages (a page before `before`) and its chat settings."""
        self._require_joined(sid, req.live_id)
        return await self.chat.history(req.live_id, req.limit, req.before)

    # -- moderation (the live's host, moderators, admins) --------------------------------

    @handles(
        "chat:slowmode",
        SlowModeReq,
        ack=ChatSlowMode,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"live_id": EXAMPLE_LIVE, "seconds": 30, "reason": "busy chat"},
    )
    async def chat_slowmode(self, sid: str, principal: Principal, req: SlowModeReq) -> Any:
        """Set a live's slow mode (0 turns it off); the host, moderators and admins only."""
        return await self.chat.set_slow_mode(principal, req.live_id, req.seconds, req.reason)

    @handles(
        "chat:delete",
        DeleteReq,
        ack=ChatDeleted,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"live_id": EXAMPLE_LIVE, "message_id": "<message_id>", "reason": "spam"},
    )
    async def chat_delete(self, sid: str, principal: Principal, req: DeleteReq) -> Any:
        """Delete a message from a live's chat (the room gets `chat:deleted`); host, moderators."""
        return await self.chat.delete(principal, req.live_id, req.message_id, req.reason)

    @handles(
        "chat:timeout",
        TimeoutReq,
        ack=ChatTimedOut,
        errors=(Code.FORBIDDEN, Code.CONFLICT),
        example={"live_id": EXAMPLE_LIVE, "user_id": "u_bob", "seconds": 600, "reason": "flooding"},
    )
    async def chat_timeout(self, sid: str, principal: Principal, req: TimeoutReq) -> Any:
        """Keep a user from sending in a live's chat for a while; host, moderators.

        Not yourself (bad_request), not the host (forbidden), not a banned user (conflict)."""
        return await self.chat.timeout(principal, req.live_id, req.user_id, req.seconds, req.reason)

    @handles(
        "chat:ban",
        UserReq,
        ack=ChatBanned,
        errors=(Code.FORBIDDEN,),
        example={"live_id": EXAMPLE_LIVE, "user_id": "u_bob", "reason": "abuse"},
    )
    async def chat_ban(self, sid: str, principal: Principal, req: UserReq) -> Any:
        """Ban a user from a live's chat and put them out of its room; host, moderators."""
        return await self.chat.ban(principal, req.live_id, req.user_id, req.reason)

    @handles(
        "chat:unban",
        UserReq,
        ack=ChatUnbanned,
        errors=(Code.FORBIDDEN,),
        example={"live_id": EXAMPLE_LIVE, "user_id": "u_bob"},
    )
    async def chat_unban(self, sid: str, principal: Principal, req: UserReq) -> Any:
        """Lift a user's ban or timeout in a live's chat; host, moderators."""
        return await self.chat.unban(principal, req.live_id, req.user_id, req.reason)

    # -- reactions --------------------------------------------------------------------------

    @handles(
        "reaction:send",
        ReactReq,
        ack=ReactionSent,
        errors=(Code.FORBIDDEN,),
        example={"live_id": EXAMPLE_LIVE, "kind": "heart"},
    )
    async def reaction_send(self, sid: str, principal: Principal, req: ReactReq) -> Any:
        """React in a live (needs room:join); the room gets the counts in `reaction:burst`."""
        self._require_joined(sid, req.live_id)
        await self.chat.react(req.live_id, req.kind)
        return {"live_id": req.live_id, "kind": req.kind}
