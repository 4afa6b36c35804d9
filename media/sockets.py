"""Audio-room events on /live (LiveKit control plane): create, join, leave and end a room; hand
raise, speaker invitations, demote, mute, remove. Stage changes reach every socket in
`audio:{id}` as `stage:update`; sockets enter that room only through `audio:join`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from media.stage import AudioJoined, AudioRooms, RoomDetails, RoomInfo, StageState, audio_room
from server.auth import Principal
from server.clock import utcnow
from server.errors import Code
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
    scheduled_for: AwareDatetime | None = Field(
        None, description="start later (at most 30 days ahead); absent: the room is live now"
    )

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
    user_id: UserId = Field(description="the member acted on")


class LowerHand(RoomRef):
    user_id: UserId | None = Field(
        None, description="someone else's hand (host and moderators only); absent: your own"
    )


#: example payloads (the room id comes from the ack of `audio:create`)
ROOM = {"room_id": "<audio_room_id>"}
MEMBER = {"room_id": "<audio_room_id>", "user_id": "u_bob"}
#: a stage change that checks the actor's rights in a live room
STAGE_ERRORS = (Code.NOT_FOUND, Code.FORBIDDEN, Code.CONFLICT)


class AudioHandlers:
    """Mixin of /live: one thin handler per audio-room event."""

    if TYPE_CHECKING:
        node: Node

        async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...
        async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None: ...

    audio: AudioRooms  # handed in by the namespace (namespaces/live.py)

    @handles(
        "audio:create",
        AudioCreate,
        ack=RoomInfo,
        errors=(Code.FORBIDDEN,),
        example={"title": "Late night talk"},
    )
    async def audio_create(self, sid: str, principal: Principal, req: AudioCreate) -> Any:
        """Create an audio room you host: live now, or scheduled with `scheduled_for`.

        Join it with `audio:join` to get the LiveKit token."""
        return await self.audio.create(principal, req.title, req.scheduled_for)

    @handles("audio:get", RoomRef, ack=RoomDetails, errors=(Code.NOT_FOUND,), example=ROOM)
    async def audio_get(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Read an audio room and its stage, without joining it."""
        return await self.audio.get(req.room_id)

    @handles(
        "audio:join",
        RoomRef,
        ack=AudioJoined,
        errors=(Code.NOT_FOUND, Code.FORBIDDEN, Code.CONFLICT),
        example=ROOM,
    )
    async def audio_join(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Enter an audio room (or come back): a LiveKit token for your role, and the stage.

        The socket joins `audio:{room_id}` and gets its `stage:update`s; the host's join opens
        a scheduled room. Refused when ended, not yet open, or after a removal."""
        room = audio_room(req.room_id)
        await self.enter_room(sid, room)  # first, so no stage:update slips past the ack
        try:
            return await self.audio.join(principal, req.room_id)
        except BaseException:
            await self.leave_room(sid, room)
            raise

    @handles("audio:leave", RoomRef, ack=StageState, errors=(Code.NOT_FOUND,), example=ROOM)
    async def audio_leave(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Leave an audio room: off the queue and the stage (the host and moderators keep
        their role)."""
        await self.leave_room(sid, audio_room(req.room_id))
        return await self.audio.leave(principal, req.room_id)

    @handles(
        "audio:end",
        RoomRef,
        ack=RoomInfo,
        errors=(Code.NOT_FOUND, Code.FORBIDDEN, Code.CONFLICT),
        example=ROOM,
    )
    async def audio_end(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """End an audio room (its host, or platform moderators): everyone gets `audio:ended`."""
        return await self.audio.end(principal, req.room_id)

    @handles(
        "hand:raise",
        RoomRef,
        ack=StageState,
        errors=(Code.NOT_FOUND, Code.CONFLICT),
        example=ROOM,
    )
    async def hand_raise(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Raise your hand to speak: a listener joins the stage's queue."""
        return await self.audio.raise_hand(principal, req.room_id)

    @handles("hand:lower", LowerHand, ack=StageState, errors=STAGE_ERRORS, example=ROOM)
    async def hand_lower(self, sid: str, principal: Principal, req: LowerHand) -> Any:
        """Lower your raised hand, or (host and moderators) someone else's."""
        return await self.audio.lower_hand(principal, req.room_id, req.user_id)

    @handles("speaker:invite", RoomUser, ack=StageState, errors=STAGE_ERRORS, example=MEMBER)
    async def speaker_invite(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        """Invite a listener to speak (host and moderators); they get `speaker:invited`."""
        return await self.audio.invite(principal, req.room_id, req.user_id)

    @handles("speaker:accept", RoomRef, ack=StageState, errors=STAGE_ERRORS, example=ROOM)
    async def speaker_accept(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Accept an invitation to speak: you join the stage, your microphone may publish."""
        return await self.audio.accept(principal, req.room_id)

    @handles(
        "speaker:decline",
        RoomRef,
        ack=StageState,
        errors=(Code.NOT_FOUND, Code.CONFLICT),
        example=ROOM,
    )
    async def speaker_decline(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Decline an invitation to speak (nothing changes without one)."""
        return await self.audio.decline(principal, req.room_id)

    @handles("speaker:demote", RoomUser, ack=StageState, errors=STAGE_ERRORS, example=MEMBER)
    async def speaker_demote(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        """Move a speaker or moderator to the audience (yourself, or as host/moderator)."""
        return await self.audio.demote(principal, req.room_id, req.user_id)

    @handles("speaker:mute", RoomUser, ack=StageState, errors=STAGE_ERRORS, example=MEMBER)
    async def speaker_mute(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        """Mute someone's microphone on stage (yourself, or as host/moderator); they unmute
        themselves in LiveKit."""
        return await self.audio.mute(principal, req.room_id, req.user_id)

    @handles(
        "speaker:unmuted",
        RoomRef,
        ack=StageState,
        errors=(Code.NOT_FOUND, Code.CONFLICT),
        example=ROOM,
    )
    async def speaker_unmuted(self, sid: str, principal: Principal, req: RoomRef) -> Any:
        """Tell the room you unmuted your own microphone in LiveKit (clears your `muted`)."""
        return await self.audio.unmuted(principal, req.room_id)

    @handles("moderator:add", RoomUser, ack=StageState, errors=STAGE_ERRORS, example=MEMBER)
    async def moderator_add(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        """Make a member a moderator (the host, or platform moderators): on stage, managing it."""
        return await self.audio.add_moderator(principal, req.room_id, req.user_id)

    @handles(
        "participant:remove",
        RoomUser,
        ack=StageState,
        errors=(Code.NOT_FOUND, Code.FORBIDDEN),
        example=MEMBER,
    )
    async def participant_remove(self, sid: str, principal: Principal, req: RoomUser) -> Any:
        """Remove a member from the room for good (host and moderators): out of LiveKit and
        `audio:{room_id}`, told with `audio:removed`, kept from joining again."""
        return await self.audio.remove(principal, req.room_id, req.user_id)
