"""Socket handlers of /messages: direct messages and circles, receipts, typing, HOURS tips,
scheduled notes (the HOURS balance is the ledger's: ledger/sockets.py).

On connect every socket joins the `conversation:{id}` rooms of its user's conversations.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from messaging.attachments import MAX_PER_MESSAGE
from messaging.conversations import (
    MAX_MEMBERS,
    Conversation,
    ConversationLeft,
    ConversationMembers,
    ListedConversation,
)
from messaging.messages import Message, MessageDeleted, MessagePage, MessagePosted
from messaging.notes import NoteCancelled, ScheduledNote
from messaging.receipts import ReceiptMarked
from messaging.service import Messaging
from messaging.tips import TipPosted
from server.auth import Principal
from server.contract import Outgoing
from server.errors import Code
from server.sockets import Namespace, handles

UserId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Body = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvReq(Req):
    conversation_id: uuid.UUID


class OpenReq(Req):
    user_id: UserId


class CreateReq(Req):
    title: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    members: Annotated[list[UserId], Field(min_length=1, max_length=MAX_MEMBERS)]


class MemberReq(ConvReq):
    user_id: UserId


class ListReq(Req):
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class SendReq(ConvReq):
    client_msg_id: ClientMsgId
    body: Annotated[str, StringConstraints(max_length=4000)] = ""
    reply_to: uuid.UUID | None = None
    attachments: Annotated[list[uuid.UUID], Field(max_length=MAX_PER_MESSAGE)] = Field(
        default_factory=list,
        description="ids from attachment:create (yours, this conversation's, unused)",
    )

    @model_validator(mode="after")
    def _body_or_attachments(self) -> SendReq:
        if not self.body and not self.attachments:
            raise ValueError("a message needs a body, attachments, or both")
        return self


class HistoryReq(ConvReq):
    before_seq: Annotated[int, Field(ge=1)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class EditReq(ConvReq):
    message_id: uuid.UUID
    body: Body


class DeleteReq(ConvReq):
    message_id: uuid.UUID


class SeqReq(ConvReq):
    seq: Annotated[int, Field(ge=0)]


class TipReq(ConvReq):
    amount: Annotated[Decimal, Field(gt=0, le=1_000_000, max_digits=12, decimal_places=2)]
    client_msg_id: ClientMsgId
    to_user: UserId | None = None


class ScheduleReq(ConvReq):
    body: Body
    deliver_at: AwareDatetime


class NoteReq(Req):
    id: uuid.UUID


class ConversationList(Outgoing):
    """The ack of `conversation:list`: latest activity first."""

    conversations: list[ListedConversation]


class TypingSent(Outgoing):
    """The ack of `typing:start` and `typing:stop`."""

    broadcast: bool = Field(
        description="false when debounced (at most one broadcast per 2 s); always true for a stop"
    )


class ScheduledList(Outgoing):
    """The ack of `message:scheduled`: your notes, latest `deliver_at` first."""

    scheduled: list[ScheduledNote]


#: the id of a conversation `conversation:open` or `conversation:create` answered with
CONV = "<conversation_id>"


class MessageHandlers(Namespace):
    """The /messages events; `messaging` is handed in by the namespace (namespaces/messages.py)."""

    messaging: Messaging

    async def connected(self, sid: str, principal: Principal, auth: dict[str, Any]) -> None:
        for r in await self.messaging.conversations.rooms_for(principal.user_id):
            await self.enter_room(sid, r)

    async def may_enter(self, principal: Principal, room: str) -> bool:
        if room.startswith("conversation:"):
            return room in await self.messaging.conversations.rooms_for(principal.user_id)
        return room == f"user:{principal.user_id}"

    @handles(
        "conversation:open",
        OpenReq,
        ack=Conversation,
        errors=(Code.FORBIDDEN,),
        example={"user_id": "u_bob"},
    )
    async def open(self, sid: str, p: Principal, req: OpenReq) -> Any:
        """Open the direct conversation with another user (created on first use)."""
        return await self.messaging.conversations.open_direct(p.user_id, req.user_id)

    @handles(
        "conversation:create",
        CreateReq,
        ack=Conversation,
        errors=(Code.FORBIDDEN,),
        example={"title": "Book club", "members": ["u_bob", "u_carol"]},
    )
    async def create(self, sid: str, p: Principal, req: CreateReq) -> Any:
        """Create a circle with these members; you are its owner."""
        return await self.messaging.conversations.create_group(p.user_id, req.title, req.members)

    @handles(
        "conversation:add",
        MemberReq,
        ack=ConversationMembers,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND, Code.CONFLICT),
        example={"conversation_id": CONV, "user_id": "u_dave"},
    )
    async def add(self, sid: str, p: Principal, req: MemberReq) -> Any:
        """Add a member to a circle you own."""
        return await self.messaging.conversations.add_member(
            p.user_id, str(req.conversation_id), req.user_id
        )

    @handles(
        "conversation:remove",
        MemberReq,
        ack=ConversationMembers,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "user_id": "u_dave"},
    )
    async def remove(self, sid: str, p: Principal, req: MemberReq) -> Any:
        """Remove a member from a circle you own."""
        return await self.messaging.conversations.remove_member(
            p.user_id, str(req.conversation_id), req.user_id
        )

    @handles(
        "conversation:leave",
        ConvReq,
        ack=ConversationLeft,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV},
    )
    async def leave(self, sid: str, p: Principal, req: ConvReq) -> Any:
        """Leave a circle (an owner who leaves hands it to the longest-standing member)."""
        return await self.messaging.conversations.leave(p.user_id, str(req.conversation_id))

    @handles("conversation:list", ListReq, ack=ConversationList)
    async def list_conversations(self, sid: str, p: Principal, req: ListReq) -> Any:
        """List your conversations, latest activity first, with last message and unread count."""
        return {"conversations": await self.messaging.conversations.list_for(p.user_id, req.limit)}

    @handles(
        "message:send",
        SendReq,
        ack=MessagePosted,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "client_msg_id": "c-0001", "body": "see you at eight"},
    )
    async def send(self, sid: str, p: Principal, req: SendReq) -> Any:
        """Post a text message, with up to 4 attachments (a retry with the same
        `client_msg_id` posts nothing twice)."""
        return await self.messaging.messages.send(
            p.user_id,
            str(req.conversation_id),
            req.client_msg_id,
            req.body,
            str(req.reply_to) if req.reply_to else None,
            sid,
            [str(a) for a in req.attachments],
        )

    @handles(
        "message:history",
        HistoryReq,
        ack=MessagePage,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "limit": 50},
    )
    async def history(self, sid: str, p: Principal, req: HistoryReq) -> Any:
        """Page back through a conversation's messages since you joined, newest first."""
        return await self.messaging.messages.history(
            p.user_id, str(req.conversation_id), req.before_seq, req.limit
        )

    @handles(
        "message:edit",
        EditReq,
        ack=Message,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "message_id": "<message_id>", "body": "see you at nine"},
    )
    async def edit(self, sid: str, p: Principal, req: EditReq) -> Any:
        """Edit the body of a text message you sent."""
        return await self.messaging.messages.edit(
            p.user_id, str(req.conversation_id), str(req.message_id), req.body
        )

    @handles(
        "message:delete",
        DeleteReq,
        ack=MessageDeleted,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "message_id": "<message_id>"},
    )
    async def delete(self, sid: str, p: Principal, req: DeleteReq) -> Any:
        """Delete a message you sent (its body goes, its seq stays)."""
        return await self.messaging.messages.delete(
            p.user_id, str(req.conversation_id), str(req.message_id)
        )

    @handles(
        "message:read",
        SeqReq,
        ack=ReceiptMarked,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "seq": 7},
    )
    async def read(self, sid: str, p: Principal, req: SeqReq) -> Any:
        """Mark a conversation read up to `seq` (the cursor never moves back)."""
        return await self.messaging.receipts.mark(
            p.user_id, str(req.conversation_id), req.seq, "read"
        )

    @handles(
        "message:delivered",
        SeqReq,
        ack=ReceiptMarked,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": CONV, "seq": 7},
    )
    async def delivered(self, sid: str, p: Principal, req: SeqReq) -> Any:
        """Mark a conversation's messages delivered up to `seq` (the cursor never moves back)."""
        return await self.messaging.receipts.mark(
            p.user_id, str(req.conversation_id), req.seq, "delivered"
        )

    @handles(
        "typing:start",
        ConvReq,
        ack=TypingSent,
        errors=(Code.FORBIDDEN,),
        example={"conversation_id": CONV},
    )
    async def typing_start(self, sid: str, p: Principal, req: ConvReq) -> Any:
        """Tell the conversation you are typing (debounced; it stops by itself after 5 s)."""
        sent = await self.messaging.receipts.typing(p.user_id, str(req.conversation_id), True, sid)
        return {"broadcast": sent}

    @handles(
        "typing:stop",
        ConvReq,
        ack=TypingSent,
        errors=(Code.FORBIDDEN,),
        example={"conversation_id": CONV},
    )
    async def typing_stop(self, sid: str, p: Principal, req: ConvReq) -> Any:
        """Tell the conversation you stopped typing."""
        await self.messaging.receipts.typing(p.user_id, str(req.conversation_id), False, sid)
        return {"broadcast": True}

    @handles(
        "tip:send",
        TipReq,
        ack=TipPosted,
        errors=(Code.FORBIDDEN, Code.CONFLICT, Code.NOT_FOUND),
        example={
            "conversation_id": CONV,
            "to_user": "u_bob",
            "amount": 5,
            "client_msg_id": "tip-0001",
        },
    )
    async def tip(self, sid: str, p: Principal, req: TipReq) -> Any:
        """Tip a member HOURS and post the tip as a message (a retry moves nothing twice)."""
        return await self.messaging.tips.tip(
            p.user_id, str(req.conversation_id), req.amount, req.client_msg_id, req.to_user, sid
        )

    @handles(
        "message:schedule",
        ScheduleReq,
        ack=ScheduledNote,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={
            "conversation_id": CONV,
            "body": "happy birthday!",
            "deliver_at": "2030-06-01T09:00:00+02:00",
        },
    )
    async def schedule(self, sid: str, p: Principal, req: ScheduleReq) -> Any:
        """Schedule a note: a message posted into the conversation at `deliver_at`."""
        return await self.messaging.notes.schedule(
            p.user_id, str(req.conversation_id), req.body, _utc(req.deliver_at)
        )

    @handles("message:scheduled", ListReq, ack=ScheduledList)
    async def scheduled(self, sid: str, p: Principal, req: ListReq) -> Any:
        """List the notes you scheduled, latest first, with each recipient's state."""
        return {"scheduled": await self.messaging.notes.of_sender(p.user_id, req.limit)}

    @handles(
        "message:cancel",
        NoteReq,
        ack=NoteCancelled,
        errors=(Code.NOT_FOUND, Code.CONFLICT),
        example={"id": "<note_id>"},
    )
    async def cancel(self, sid: str, p: Principal, req: NoteReq) -> Any:
        """Cancel a note you scheduled, before it is sent."""
        return await self.messaging.notes.cancel(p.user_id, str(req.id))


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
