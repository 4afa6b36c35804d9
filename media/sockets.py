"""Audio-room events on /live (LiveKit control plane): create, join, leave and end a room; hand
raise, speaker invitations, demote, mute, remove. Stage changes reach every socket in
`audio:{id}` as `stage:update`; sockets enter that room only through `audio:join`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, field_validator

from media.stage import AudioRooms, audio_room
from server.auth import Principal
from server.clock import utcnow
from server.sockets import handles

if TYPE_CHECKING:
    from server.node import Node

RoomId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class AudioCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    scheduled_for: AwareDatetime | None = None

    @field_validator("scheduled_for")
    @classmethod
    def _within_30_days(cls, v: datetime | None) -> datetime | None:
        if v is not None and v > utcnow() + timedelta(days=30):
            raise ValueError("schedule at most 30 days ahead")
        return v


class RoomRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    room_id: RoomId


class RoomUser(RoomRef):
    user_id: UserId


class LowerHand(RoomRef):
    user_id: UserId | None = None  # someone else's hand: host/moderators only


class AudioHandlers:
    """Mixin of /live: one thin handler per audio-room event."""

    if TYPE_CHECKING:
        node: Node

        async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...
        async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...

    audio: AudioRooms  # handed in by the namespace (namespaces/live.py)

    @handles("audio:create", AudioCreate)
    async def audio_create(self, sid: str, principal: Principal, req: AudioCreate) -> Any:
        return await self.audio.create(principal, req.title, req.scheduled_for)

    @handles("audio:get", RoomRef)
    async def audio_get(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.get(req.room_id)

    @handles("audio:join", RoomRef)
    async def audio_join(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        room = audio_room(req.room_id)
        await self.enter_room(sid, room)  # first, so no stage:update slips past the ack
        try:
            return await self.audio.join(principal, req.room_id)
        except BaseException:
            await self.leave_room(sid, room)
            raise

    @handles("audio:leave", RoomRef)
    async def audio_leave(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        await self.leave_room(sid, audio_room(req.room_id))
        return await self.audio.leave(principal, req.room_id)

    @handles("audio:end", RoomRef)
    async def audio_end(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.end(principal, req.room_id)

    @handles("hand:raise", RoomRef)
    async def hand_raise(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.raise_hand(principal, req.room_id)

    @handles("hand:lower", LowerHand)
    async def hand_lower(self, sid: str, principal: Principal, req: LowerHand) -> Any:
        return await self.audio.lower_hand(principal, req.room_id, req.user_id)

    @handles("speaker:invite", RoomUser)
    async def speaker_invite(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        return await self.audio.invite(principal, req.room_id, req.user_id)

    @handles("speaker:accept", RoomRef)
    async def speaker_accept(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.accept(principal, req.room_id)

    @handles("speaker:decline", RoomRef)
    async def speaker_decline(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.decline(principal, req.room_id)

    @handles("speaker:demote", RoomUser)
    async def speaker_demote(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        return await self.audio.demote(principal, req.room_id, req.user_id)

    @handles("speaker:mute", RoomUser)
    async def speaker_mute(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        return await self.audio.mute(principal, req.room_id, req.user_id)

    @handles("speaker:unmuted", RoomRef)
    async def speaker_unmuted(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        return await self.audio.unmuted(principal, req.room_id)

    @handles("moderator:add", RoomUser)
    async def moderator_add(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        return await self.audio.add_moderator(principal, req.room_id, req.user_id)

    @handles("participant:remove", RoomUser)
    async def participant_remove(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        return await self.audio.remove(principal, req.room_id, req.user_id)
