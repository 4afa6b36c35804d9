"""Socket handlers of /messages for reactions and seen-by (`ExpressionHandlers`, a base of
`MessagesNamespace`); replies are sent with `message:send {reply_to}` (messaging/sockets.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from messaging.reactions import ReactionAck
from messaging.seen import SeenBy
from messaging.service import Messaging
from server.auth import Principal
from server.errors import Code
from server.sockets import Namespace, handles

#: an emoji or emoji sequence; checked further by `messaging.reactions.is_emoji`
Emoji = Annotated[str, StringConstraints(min_length=1, max_length=32)]

CONV = "<conversation_id>"


class ReactReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    emoji: Emoji


class SeenReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: uuid.UUID
    seq: Annotated[int, Field(ge=1)]


class ExpressionHandlers(Namespace):
    """Reactions and seen-by; `messaging` is handed in by the namespace."""

    messaging: Messaging

    @handles(
        "message:react",
        ReactReq,
        ack=ReactionAck,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND, Code.CONFLICT),
        example={"conversation_id": CONV, "message_id": "<message_id>", "emoji": "👍"},
    )
    async def react(self, sid: str, p: Principal, req: ReactReq) -> Any:
        """React to a message with an emoji (once per emoji: reacting again changes nothing)."""
        return await self.messaging.reactions.react(
            p.user_id, str(req.conversation_id), str(req.message_id), req.emoji
        )

    @handles(
        "message:unreact",
        ReactReq,
        ack=ReactionAck,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "message_id": "<message_id>", "emoji": "👍"},
    )
    async def unreact(self, sid: str, p: Principal, req: ReactReq) -> Any:
        """Take back your reaction with this emoji."""
        return await self.messaging.reactions.unreact(
            p.user_id, str(req.conversation_id), str(req.message_id), req.emoji
        )

    @handles(
        "message:seen_by",
        SeenReq,
        ack=SeenBy,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "seq": 1},
    )
    async def seen_by(self, sid: str, p: Principal, req: SeenReq) -> Any:
        """Who has read message `seq`, and who has it but not yet read it."""
        return await self.messaging.seen.seen_by(p.user_id, str(req.conversation_id), req.seq)
