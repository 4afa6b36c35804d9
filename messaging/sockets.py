"""Socket handlers of /messages: direct messages and circles, receipts, typing, HOURS tips,
scheduled notes (the HOURS balance is the ledger's: ledger/sockets.py).

On connect every socket joins the `conversation:{id}` rooms of its user's conversations.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from messaging.conversations import MAX_MEMBERS
from messaging.service import Messaging
from server.auth import Principal
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
    body: Body
    reply_to: uuid.UUID | None = None


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

    @handles("conversation:open", OpenReq)
    async def open(self, sid: str, p: Principal, req: OpenReq) -> Any:
        return await self.messaging.conversations.open_direct(p.user_id, req.user_id)

    @handles("conversation:create", CreateReq)
    async def create(self, sid: str, p: Principal, req: CreateReq) -> Any:
        return await self.messaging.conversations.create_group(p.user_id, req.title, req.members)

    @handles("conversation:add", MemberReq)
    async def add(self, sid: str, p: Principal, req: MemberReq) -> Any:
        return await self.messaging.conversations.add_member(
            p.user_id, str(req.conversation_id), req.user_id
        )

    @handles("conversation:remove", MemberReq)
    async def remove(self, sid: str, p: Principal, req: MemberReq) -> Any:
        return await self.messaging.conversations.remove_member(
            p.user_id, str(req.conversation_id), req.user_id
        )

    @handles("conversation:leave", ConvReq)
    async def leave(self, sid: str, p: Principal, req: ConvReq) -> Any:
        return await self.messaging.conversations.leave(p.user_id, str(req.conversation_id))

    @handles("conversation:list", ListReq)
    async def list_conversations(self, sid: str, p: Principal, req: ListReq) -> Any:
        return {"conversations": await self.messaging.conversations.list_for(p.user_id, req.limit)}

    @handles("message:send", SendReq)
    async def send(self, sid: str, p: Principal, req: SendReq) -> Any:
        return await self.messaging.messages.send(
            p.user_id,
            str(req.conversation_id),
            req.client_msg_id,
            req.body,
            str(req.reply_to) if req.reply_to else None,
            sid,
        )

    @handles("message:history", HistoryReq)
    async def history(self, sid: str, p: Principal, req: HistoryReq) -> Any:
        return await self.messaging.messages.history(
            p.user_id, str(req.conversation_id), req.before_seq, req.limit
        )

    @handles("message:edit", EditReq)
    async def edit(self, sid: str, p: Principal, req: EditReq) -> Any:
        return await self.messaging.messages.edit(
            p.user_id, str(req.conversation_id), str(req.message_id), req.body
        )

    @handles("message:delete", DeleteReq)
    async def delete(self, sid: str, p: Principal, req: DeleteReq) -> Any:
        return await self.messaging.messages.delete(
            p.user_id, str(req.conversation_id), str(req.message_id)
        )

    @handles("message:read", SeqReq)
    async def read(self, sid: str, p: Principal, req: SeqReq) -> Any:
        return await self.messaging.receipts.mark(
            p.user_id, str(req.conversation_id), req.seq, "read"
        )

    @handles("message:delivered", SeqReq)
    async def delivered(self, sid: str, p: Principal, req: SeqReq) -> Any:
        return await self.messaging.receipts.mark(
            p.user_id, str(req.conversation_id), req.seq, "delivered"
        )

    @handles("typing:start", ConvReq)
    async def typing_start(self, sid: str, p: Principal, req: ConvReq) -> Any:
        sent = await self.messaging.receipts.typing(p.user_id, str(req.conversation_id), True, sid)
        return {"broadcast": sent}

    @handles("typing:stop", ConvReq)
    async def typing_stop(self, sid: str, p: Principal, req: ConvReq) -> Any:
        await self.messaging.receipts.typing(p.user_id, str(req.conversation_id), False, sid)
        return {"broadcast": True}

    @handles("tip:send", TipReq)
    async def tip(self, sid: str, p: Principal, req: TipReq) -> Any:
        return await self.messaging.tips.tip(
            p.user_id, str(req.conversation_id), req.amount, req.client_msg_id, req.to_user, sid
        )

    @handles("message:schedule", ScheduleReq)
    async def schedule(self, sid: str, p: Principal, req: ScheduleReq) -> Any:
        return await self.messaging.notes.schedule(
            p.user_id, str(req.conversation_id), req.body, _utc(req.deliver_at)
        )

    @handles("message:scheduled", ListReq)
    async def scheduled(self, sid: str, p: Principal, req: ListReq) -> Any:
        return {"scheduled": await self.messaging.notes.of_sender(p.user_id, req.limit)}

    @handles("message:cancel", NoteReq)
    async def cancel(self, sid: str, p: Principal, req: NoteReq) -> Any:
        return await self.messaging.notes.cancel(p.user_id, str(req.id))


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
