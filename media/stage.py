"""Audio rooms and their stage: who hosts, moderates, speaks and listens; the hand-raise queue;
invitations. Each change is applied to LiveKit (permissions, mutes, removals) while the room
row is locked, then the whole stage goes to every socket in `audio:{id}` as one
`stage:update`. LiveKit webhooks keep the stage true when clients vanish."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from livekit import api
from pydantic import Field

from media.livekit import LiveKit, Role, missing_settings, publishes
from media.stage_store import Member, Room, StageStore, StageTx
from server.auth import Principal
from server.clock import utcnow
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.events import build_event
from server.policy import Action, allowed, require
from server.rooms import user_room
from server.server_events import server_event

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.media.stage")

NAMESPACE = "/live"
MAX_ON_STAGE = 100  # seed 004: up to 100 simultaneous speakers (host and moderators included)
MANAGERS = ("host", "moderator")


def audio_room(room_id: str) -> str:
    return f"audio:{room_id}"


# -- what goes out: acks and server events ----------------------------------------------------

RoomState = Literal["scheduled", "live", "ended"]


class RoomInfo(Outgoing):
    """An audio room (the ack of `audio:create` and `audio:end`, `room` of `audio:get`)."""

    room_id: str
    title: str
    host: str = Field(description="the host's user id")
    state: RoomState
    scheduled_for: str | None = Field(
        description="ISO time a scheduled room was to start (null for a room live at creation)"
    )
    started_at: str | None = Field(description="ISO time the room went live")
    ended_at: str | None = Field(description="ISO time the room ended")


class StageState(Outgoing):
    """The whole stage of an audio room as clients see it (the ack of every stage change)."""

    room_id: str
    title: str
    state: RoomState
    host: str = Field(description="the host's user id")
    moderators: list[str] = Field(description="user ids of the moderators, in stage order")
    speakers: list[str] = Field(description="user ids of the speakers, in stage order")
    queue: list[str] = Field(description="user ids with a raised hand, first raised first")
    invited: list[str] = Field(description="user ids invited to speak, not yet answered")
    muted: list[str] = Field(description="user ids on stage whose microphone was muted")
    listener_count: int = Field(description="listeners present (not removed)")
    on_stage: int = Field(description="host, moderators and speakers")
    max_on_stage: int = Field(description="how many may be on stage at once")
    version: int = Field(description="grows by one per stage change; apply only newer updates")


StageAction = Literal[
    "joined",
    "left",
    "hand_raised",
    "hand_lowered",
    "invited",
    "invitation_declined",
    "speaker_added",
    "moved_to_audience",
    "muted",
    "unmuted",
    "moderator_added",
    "removed",
]


class StageChange(Outgoing):
    """What changed the stage (the `change` of `stage:update`)."""

    action: StageAction
    user_id: str = Field(description="the member the change is about")
    by: str | None = Field(
        None, description="who did it, when someone acted on another member (or lowered a hand)"
    )
    tracks: int | None = Field(None, description="with `muted`: microphone tracks muted")


class StageUpdate(StageState):
    """`stage:update`: the whole stage after a change, and the change."""

    change: StageChange


class RoomDetails(Outgoing):
    """The ack of `audio:get`: the room and its stage."""

    room: RoomInfo
    stage: StageState


class LiveKitJoin(Outgoing):
    """Where and how to connect to the room's LiveKit audio."""

    url: str = Field(description="the LiveKit WebSocket URL")
    token: str = Field(description="a LiveKit access token, its grants matching the role")
    expires_in: int = Field(description="seconds the token stays valid (to connect)")


class AudioJoined(Outgoing):
    """The ack of `audio:join`: the member's role, LiveKit credentials and the stage."""

    room_id: str
    role: Role
    livekit: LiveKitJoin
    stage: StageState


class SpeakerInvited(Outgoing):
    """`speaker:invited`: an invitation to the stage, to the invited user's own room."""

    room_id: str
    by: str = Field(description="who invited")
    version: int = Field(description="the stage version with the invitation")


class AudioRemoved(Outgoing):
    """`audio:removed`: a manager removed you from the room."""

    room_id: str


class AudioEnded(Outgoing):
    """`audio:ended`: the room is over."""

    room_id: str
    reason: str = Field(description="ended by the host, the LiveKit room finished, ...")


_STAGE_EXAMPLE: dict[str, Any] = {
    "room_id": "<audio_room_id>",
    "title": "Late night talk",
    "state": "live",
    "host": "u_alice",
    "moderators": [],
    "speakers": ["u_bob"],
    "queue": ["u_carol"],
    "invited": [],
    "muted": [],
    "listener_count": 12,
    "on_stage": 2,
    "max_on_stage": MAX_ON_STAGE,
    "version": 7,
}

STAGE_UPDATE = server_event(
    "stage:update",
    StageUpdate,
    namespaces=(NAMESPACE,),
    summary="The whole stage of an audio room after a change, to every socket in"
    " `audio:{room_id}` (apply only a `version` newer than the one you have)",
    example={**_STAGE_EXAMPLE, "change": {"action": "hand_raised", "user_id": "u_carol"}},
)
SPEAKER_INVITED = server_event(
    "speaker:invited",
    SpeakerInvited,
    namespaces=(NAMESPACE,),
    summary="You were invited to speak in an audio room (to all your sockets, also outside the"
    " room): answer with `speaker:accept` or `speaker:decline`",
    example={"room_id": "<audio_room_id>", "by": "u_alice", "version": 8},
)
AUDIO_REMOVED = server_event(
    "audio:removed",
    AudioRemoved,
    namespaces=(NAMESPACE,),
    summary="You were removed from an audio room (your sockets left `audio:{room_id}`)",
    example={"room_id": "<audio_room_id>"},
)
AUDIO_ENDED = server_event(
    "audio:ended",
    AudioEnded,
    namespaces=(NAMESPACE,),
    summary="The audio room ended; every socket leaves `audio:{room_id}` right after",
    example={"room_id": "<audio_room_id>", "reason": "ended by the host"},
)


def room_info(room: Room) -> dict[str, Any]:
    return {
        "room_id": room.id,
        "title": room.title,
        "host": room.host_id,
        "state": room.state,
        "scheduled_for": room.scheduled_for.isoformat() if room.scheduled_for else None,
        "started_at": room.started_at.isoformat() if room.started_at else None,
        "ended_at": room.ended_at.isoformat() if room.ended_at else None,
    }


def stage_state(room: Room, members: list[Member]) -> dict[str, Any]:
    """The whole stage as clients see it (members come ordered by their place on stage)."""
    queue = sorted((m for m in members if m.hand_seq is not None), key=lambda m: m.hand_seq or 0)
    return {
        "room_id": room.id,
        "title": room.title,
        "state": room.state,
        "host": room.host_id,
        "moderators": [m.user_id for m in members if m.role == "moderator"],
        "speakers": [m.user_id for m in members if m.role == "speaker"],
        "queue": [m.user_id for m in queue],
        "invited": [m.user_id for m in members if m.invited],
        "muted": [m.user_id for m in members if m.muted],
        "listener_count": sum(
            1 for m in members if m.role == "listener" and m.present and not m.removed
        ),
        "on_stage": sum(1 for m in members if m.role != "listener"),
        "max_on_stage": MAX_ON_STAGE,
        "version": room.version,
    }


Change = dict[str, Any]
Op = Callable[[StageTx], Awaitable[Change | None]]


class AudioRooms:
    """The audio-room service: one method per client action, plus LiveKit webhooks."""

    def __init__(self, node: Node, store: StageStore, livekit: LiveKit | None) -> None:
        self.node = node
        self.store = store
        self.livekit = livekit

    @property
    def lk(self) -> LiveKit:
        if self.livekit is None:
            raise ApiError(
                Code.UNAVAILABLE,
                "audio rooms need LiveKit; set "
                + ", ".join(missing_settings(self.node.settings))
                + " (see docs/operations.md)",
            )
        return self.livekit

    # -- rooms ------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, title: str, scheduled_for: datetime | None
    ) -> dict[str, Any]:
        lk = self.lk
        require(principal, Action.AUDIO_CREATE)
        room_id = "a_" + uuid.uuid4().hex[:16]
        live = scheduled_for is None or scheduled_for <= utcnow() + timedelta(seconds=60)
        if live:
            await lk.create_room(room_id)  # before any row: a refusal leaves nothing behind
        room = await self.store.create_room(
            room_id,
            principal.user_id,
            title,
            state="live" if live else "scheduled",
            scheduled_for=None if live else scheduled_for,
        )
        if live:
            await self._publish_started(room)
        log.info("audio room created", extra={"room": room_id, "live": live})
        return room_info(room)

    async def get(self, room_id: str) -> dict[str, Any]:
        snap = await self.store.snapshot(room_id)
        if snap is None:
            raise ApiError(Code.NOT_FOUND, "no such audio room")
        room, members = snap
        return {"room": room_info(room), "stage": stage_state(room, members)}

    async def join(self, principal: Principal, room_id: str) -> dict[str, Any]:
        """Enter a room (or come back): a LiveKit token whose grants match the member's role."""
        lk = self.lk
        uid = principal.user_id
        started: Room | None = None
        async with self.store.locked(room_id) as tx:
            if tx is None:
                raise ApiError(Code.NOT_FOUND, "no such audio room")
            room = tx.room
            if room.state == "ended":
                raise ApiError(Code.CONFLICT, "this audio room has ended")
            member = await tx.member(uid)
            if member is not None and member.removed:
                raise ApiError(Code.FORBIDDEN, "you were removed from this room")
            if room.state == "scheduled":
                if uid != room.host_id:
                    when = room.scheduled_for.isoformat() if room.scheduled_for else "later"
                    raise ApiError(
                        Code.CONFLICT, f"the room starts at {when}, once the host opens it"
                    )
                await lk.create_room(room.id)
                await tx.update_room(state="live", started_at=utcnow())
                started = room
            if member is None:
                member = await tx.add_member(uid, "listener", present=True)
            else:
                await tx.update_member(member, present=True)
            state, changed = await self._finish(tx)
            token, ttl = lk.join_token(room.id, uid, cast(Role, member.role))
        if changed:
            await self._broadcast(state, {"action": "joined", "user_id": uid})
        if started is not None:
            await self._publish_started(started)
        return {
            "room_id": room_id,
            "role": member.role,
            "livekit": {"url": lk.ws_url, "token": token, "expires_in": ttl},
            "stage": state,
        }

    async def leave(self, principal: Principal, room_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(principal.user_id)
            if member is None or member.removed:
                raise ApiError(Code.NOT_FOUND, "you are not in this room")
            await tx.update_member(member, **_gone(member))
            return {"action": "left", "user_id": member.user_id}

        return await self._mutate(room_id, op, live_only=False)

    async def end(self, principal: Principal, room_id: str) -> dict[str, Any]:
        lk = self.lk
        async with self.store.locked(room_id) as tx:
            if tx is None:
                raise ApiError(Code.NOT_FOUND, "no such audio room")
            require(principal, Action.STAGE_MANAGE, owner=principal.user_id == tx.room.host_id)
            if tx.room.state == "ended":
                raise ApiError(Code.CONFLICT, "this audio room has already ended")
            was_live = tx.room.state == "live"
            if was_live:
                await lk.delete_room(tx.room.id)
            await self._mark_ended(tx)
            await self._audit(tx, principal, "end")
            room = tx.room
        await self._ended(room, "ended by the host", announce=was_live)
        return room_info(room)

    # -- stage ------------------------------------------------------------------------------

    async def raise_hand(self, principal: Principal, room_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await self._present(tx, principal.user_id, "you")
            if member.role != "listener":
                raise ApiError(Code.CONFLICT, "you are already on the stage")
            if member.hand_seq is not None:
                return None
            await tx.update_member(member, hand_seq=await tx.next_seq())
            return {"action": "hand_raised", "user_id": member.user_id}

        return await self._mutate(room_id, op)

    async def lower_hand(
        self, principal: Principal, room_id: str, user_id: str | None
    ) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            target = user_id or principal.user_id
            if target != principal.user_id:
                await self._require_manager(tx, principal)
            member = await tx.member(target)
            if member is None or member.hand_seq is None:
                return None
            await tx.update_member(member, hand_seq=None)
            if target != principal.user_id:  # a manager lowered someone else's hand
                await self._audit(tx, principal, "hand_lower", target)
            return {"action": "hand_lowered", "user_id": target, "by": principal.user_id}

        return await self._mutate(room_id, op)

    async def invite(self, principal: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            await self._require_manager(tx, principal)
            member = await self._present(tx, user_id, "that user")
            if member.role != "listener":
                raise ApiError(Code.CONFLICT, "that user is already on the stage")
            await self._require_room_on_stage(tx)
            if member.invited:
                return None
            await tx.update_member(member, invited=True)
            await self._audit(tx, principal, "invite", user_id)
            return {"action": "invited", "user_id": user_id, "by": principal.user_id}

        state = await self._mutate(room_id, op)
        await self.node.fanout.emit(  # the invited user's devices, also outside the room
            SPEAKER_INVITED,
            {"room_id": room_id, "by": principal.user_id, "version": state["version"]},
            namespace=NAMESPACE,
            room=user_room(user_id),
        )
        return state

    async def accept(self, principal: Principal, room_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await self._present(tx, principal.user_id, "you")
            if not member.invited:
                raise ApiError(Code.FORBIDDEN, "accept needs an invitation from the host")
            await self._require_room_on_stage(tx)
            await self.lk.set_role(tx.room.id, member.user_id, "speaker")
            await tx.update_member(
                member,
                role="speaker",
                invited=False,
                hand_seq=None,
                muted=False,
                stage_seq=await tx.next_seq(),
            )
            return {"action": "speaker_added", "user_id": member.user_id}

        return await self._mutate(room_id, op)

    async def decline(self, principal: Principal, room_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(principal.user_id)
            if member is None or not member.invited:
                return None
            await tx.update_member(member, invited=False)
            return {"action": "invitation_declined", "user_id": member.user_id}

        return await self._mutate(room_id, op)

    async def demote(self, principal: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(user_id)
            if member is None or member.role == "listener":
                raise ApiError(Code.CONFLICT, "that user is not on the stage")
            if member.role == "host":
                raise ApiError(Code.FORBIDDEN, "the host cannot be moved off the stage")
            if user_id != principal.user_id:  # stepping down yourself needs no rights
                await self._require_manager(tx, principal, over=member)
            await self.lk.set_role(tx.room.id, user_id, "listener")
            await tx.update_member(member, role="listener", stage_seq=None, muted=False)
            if user_id != principal.user_id:
                await self._audit(tx, principal, "demote", user_id)
            return {"action": "moved_to_audience", "user_id": user_id, "by": principal.user_id}

        return await self._mutate(room_id, op)

    async def mute(self, principal: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(user_id)
            if member is None or member.role == "listener":
                raise ApiError(Code.CONFLICT, "that user is not on the stage")
            if user_id != principal.user_id:
                await self._require_manager(tx, principal, over=member)
            tracks = await self.lk.mute_microphone(tx.room.id, user_id)
            await tx.update_member(member, muted=True)
            if user_id != principal.user_id:
                await self._audit(tx, principal, "mute", user_id)
            return {"action": "muted", "user_id": user_id, "tracks": tracks or 0}

        return await self._mutate(room_id, op)

    async def unmuted(self, principal: Principal, room_id: str) -> dict[str, Any]:
        """A speaker unmuted their own microphone (clients do that in LiveKit themselves)."""

        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(principal.user_id)
            if member is None or not member.muted:
                return None
            await tx.update_member(member, muted=False)
            return {"action": "unmuted", "user_id": member.user_id}

        return await self._mutate(room_id, op)

    async def add_moderator(
        self, principal: Principal, room_id: str, user_id: str
    ) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            require(principal, Action.STAGE_MANAGE, owner=principal.user_id == tx.room.host_id)
            member = await self._present(tx, user_id, "that user")
            if member.role in MANAGERS:
                return None
            if member.role == "listener":
                await self._require_room_on_stage(tx)
            await self.lk.set_role(tx.room.id, user_id, "moderator")
            await tx.update_member(
                member,
                role="moderator",
                invited=False,
                hand_seq=None,
                stage_seq=member.stage_seq or await tx.next_seq(),
            )
            await self._audit(tx, principal, "moderator_add", user_id)
            return {"action": "moderator_added", "user_id": user_id, "by": principal.user_id}

        return await self._mutate(room_id, op)

    async def remove(self, principal: Principal, room_id: str, user_id: str) -> dict[str, Any]:
        async def op(tx: StageTx) -> Change | None:
            member = await tx.member(user_id)
            if member is None:
                raise ApiError(Code.NOT_FOUND, "that user is not in this room")
            if member.role == "host":
                raise ApiError(Code.FORBIDDEN, "the host cannot be removed")
            await self._require_manager(tx, principal, over=member)
            if member.removed:
                return None
            await self.lk.remove(tx.room.id, user_id)
            await tx.update_member(member, removed=True, **_gone(member, role="listener"))
            await self._audit(tx, principal, "remove", user_id)
            return {"action": "removed", "user_id": user_id, "by": principal.user_id}

        state = await self._mutate(room_id, op, live_only=False)
        # every socket of the user, on any node, leaves audio:{id} and is told why
        await self.node.fanout.leave_user(NAMESPACE, user_id, audio_room(room_id))
        await self.node.fanout.emit(
            AUDIO_REMOVED, {"room_id": room_id}, namespace=NAMESPACE, room=user_room(user_id)
        )
        return state

    # -- LiveKit webhooks -------------------------------------------------------------------

    async def on_webhook(self, event: api.WebhookEvent) -> str:
        """Apply one verified LiveKit webhook; return what happened (for the response/log)."""
        kind = event.event
        if kind not in (
            "participant_joined",
            "participant_left",
            "participant_connection_aborted",
            "room_finished",
        ):
            return "ignored"
        receipt = event.id or (
            f"{kind}:{event.room.name}:{event.participant.identity}:{event.created_at}"
        )
        ended: Room | None = None
        async with self.store.locked(event.room.name) as tx:
            if tx is None:
                return "unknown room"
            if not await tx.claim_receipt("livekit", receipt):
                return "duplicate"
            if tx.room.state == "ended":
                return "room already ended"
            if kind == "room_finished":
                await self._mark_ended(tx)
                ended = tx.room
                change: Change | None = None
            else:
                change = await self._participant_event(tx, kind, event)
            state, changed = await self._finish(tx)
        if ended is not None:
            await self._ended(ended, "the LiveKit room finished", announce=True)
            return "ended"
        if changed and change is not None:
            await self._broadcast(state, change)
            return "applied"
        return "no change"

    async def _participant_event(
        self, tx: StageTx, kind: str, event: api.WebhookEvent
    ) -> Change | None:
        identity = event.participant.identity
        member = await tx.member(identity)
        at = int(event.created_at)
        if member is not None and at < member.lk_event_at:
            return None  # an older delivery than one already applied
        if kind == "participant_joined":
            if (member is not None and member.removed) or tx.room.state != "live":
                await self.lk.remove(tx.room.id, identity)
                return None
            if member is None:
                member = await tx.add_member(identity, "listener", present=True)
                await tx.update_member(member, lk_event_at=at)
            else:
                await tx.update_member(member, present=True, lk_event_at=at)
            if event.participant.permission.can_publish != publishes(cast(Role, member.role)):
                # joined with a token issued before a role change: apply the current role
                await self.lk.set_role(tx.room.id, identity, cast(Role, member.role))
            return {"action": "joined", "user_id": identity}
        if member is None:
            return None
        await tx.update_member(member, lk_event_at=at, **_gone(member))
        return {"action": "left", "user_id": identity}

    # -- internals --------------------------------------------------------------------------

    async def _mutate(self, room_id: str, op: Op, *, live_only: bool = True) -> dict[str, Any]:
        async with self.store.locked(room_id) as tx:
            if tx is None:
                raise ApiError(Code.NOT_FOUND, "no such audio room")
            if live_only and tx.room.state != "live":
                raise ApiError(Code.CONFLICT, f"the room is {tx.room.state}, not live")
            change = await op(tx)
            state, changed = await self._finish(tx)
        if changed and change is not None:
            await self._broadcast(state, change)
        return state

    async def _finish(self, tx: StageTx) -> tuple[dict[str, Any], bool]:
        changed = tx.changed
        if changed:
            await tx.bump()
        return stage_state(tx.room, await tx.members()), changed

    async def _broadcast(self, state: dict[str, Any], change: Change) -> None:
        await self.node.fanout.emit(
            STAGE_UPDATE,
            {**state, "change": change},
            namespace=NAMESPACE,
            room=audio_room(state["room_id"]),
        )

    async def _present(self, tx: StageTx, user_id: str, who: str) -> Member:
        member = await tx.member(user_id)
        if member is None or member.removed or not member.present:
            verb = "are" if who == "you" else "is"
            raise ApiError(Code.NOT_FOUND, f"{who} {verb} not in this room")
        return member

    async def _require_manager(
        self, tx: StageTx, principal: Principal, *, over: Member | None = None
    ) -> None:
        """Only the host and moderators manage the stage (and platform moderators/admins);
        moderators cannot act on each other or on the host."""
        me = await tx.member(principal.user_id)
        role = me.role if me is not None and not me.removed else None
        require(principal, Action.STAGE_MANAGE, owner=role in MANAGERS)
        if over is not None and over.role in MANAGERS and role != "host":
            if not allowed(principal, Action.STAGE_MANAGE):
                raise ApiError(Code.FORBIDDEN, "only the host acts on the host and moderators")

    async def _audit(
        self, tx: StageTx, principal: Principal, action: str, user_id: str | None = None
    ) -> None:
        """Moderation on a stage goes to the audit log, in the change's transaction."""
        await self.node.audit.record(
            principal,
            f"audio.{action}",
            f"user:{user_id}" if user_id else f"audio:{tx.room.id}",
            details={"room_id": tx.room.id},
            conn=tx.conn,
        )

    async def _require_room_on_stage(self, tx: StageTx) -> None:
        if await tx.on_stage() >= MAX_ON_STAGE:
            raise ApiError(
                Code.CONFLICT,
                f"the stage is full ({MAX_ON_STAGE} on stage); move someone to the audience first",
            )

    async def _mark_ended(self, tx: StageTx) -> None:
        await tx.update_room(state="ended", ended_at=utcnow())

    async def _ended(self, room: Room, reason: str, *, announce: bool) -> None:
        target = audio_room(room.id)
        await self.node.fanout.emit(
            AUDIO_ENDED, {"room_id": room.id, "reason": reason}, namespace=NAMESPACE, room=target
        )
        if self.node.sio is not None:
            await self.node.sio.close_room(target, namespace=NAMESPACE)
        if announce:
            duration = (
                int((room.ended_at - room.started_at).total_seconds())
                if room.ended_at and room.started_at
                else None
            )
            payload: dict[str, Any] = {"live_id": room.id, "host_id": room.host_id}
            if duration is not None:
                payload["duration_s"] = max(0, duration)
            await self._publish("live.ended", room, payload)
        log.info("audio room ended", extra={"room": room.id, "reason": reason})

    async def _publish_started(self, room: Room) -> None:
        await self._publish(
            "live.started",
            room,
            {"live_id": room.id, "host_id": room.host_id, "kind": "audio", "title": room.title},
        )

    async def _publish(self, type_: str, room: Room, payload: dict[str, Any]) -> None:
        event = build_event(
            {
                "type": type_,
                "actor": room.host_id,
                "subjects": [f"live:{room.id}"],
                "payload": payload,
            },
            idempotency_key=f"audio:{room.id}:{type_}",
            scope="media",
        )
        await self.node.bus.publish(event)


def _gone(member: Member, role: str | None = None) -> dict[str, Any]:
    """Fields of a member who left: off the queue, invitation dropped, speakers to audience."""
    fields: dict[str, Any] = {"present": False, "hand_seq": None, "invited": False}
    new_role = role or ("listener" if member.role == "speaker" else member.role)
    fields["role"] = new_role
    if new_role == "listener":
        fields.update(stage_seq=None, muted=False)
    return fields
