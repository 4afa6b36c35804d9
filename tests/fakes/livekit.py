"""A fake LiveKit server for tests: the RoomService Twirp API (protobuf, as livekit-api sends it,
or JSON), checking the bearer JWT and its grants like LiveKit does; rooms, participants,
their permissions and tracks; and webhooks signed like LiveKit's (Authorization: a JWT whose
`sha256` claim is the base64 sha256 of the body).

Clients "connect" with `await fake.join(token)`: the token a client got from `audio:join` is
verified as LiveKit's signaling server would, and the participant gets the token's grants.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit import api

SOURCES = {
    "camera": api.TrackSource.CAMERA,
    "microphone": api.TrackSource.MICROPHONE,
    "screen_share": api.TrackSource.SCREEN_SHARE,
    "screen_share_audio": api.TrackSource.SCREEN_SHARE_AUDIO,
}


class TwirpFail(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class FakeRoom:
    name: str
    sid: str
    empty_timeout: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    participants: dict[str, api.ParticipantInfo] = field(default_factory=dict)

    def info(self) -> api.Room:
        return api.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            creation_time=self.created_at,
            num_participants=len(self.participants),
        )


def _hex() -> str:
    return uuid.uuid4().hex[:12]


class FakeLiveKit:
    def __init__(
        self, api_key: str = "APItestkey", api_secret: str = "test-livekit-secret-0123456789abcdef"
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.verifier = api.TokenVerifier(api_key, api_secret)
        self.rooms: dict[str, FakeRoom] = {}
        self.calls: list[tuple[str, Message]] = []
        self.webhook_url: str | None = None
        self.webhook_results: list[tuple[str, int]] = []
        self._fail: dict[str, TwirpFail] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._methods: dict[str, tuple[type[Message], Callable[[Any], Awaitable[Message]]]] = {
            "CreateRoom": (api.CreateRoomRequest, self._create_room),
            "ListRooms": (api.ListRoomsRequest, self._list_rooms),
            "DeleteRoom": (api.DeleteRoomRequest, self._delete_room),
            "ListParticipants": (api.ListParticipantsRequest, self._list_participants),
            "GetParticipant": (api.RoomParticipantIdentity, self._get_participant),
            "UpdateParticipant": (api.UpdateParticipantRequest, self._update_participant),
            "MutePublishedTrack": (api.MuteRoomTrackRequest, self._mute_track),
            "RemoveParticipant": (api.RoomParticipantIdentity, self._remove_participant),
        }

    # -- server -----------------------------------------------------------------------------

    async def start(self, port: int) -> str:
        app = web.Application()
        app.router.add_post("/twirp/livekit.RoomService/{method}", self._twirp)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.settle()
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, method: str, status: int = 503, code: str = "unavailable") -> None:
        """Make the next call of `method` fail with this Twirp error."""
        self._fail[method] = TwirpFail(status, code, "injected failure")

    def calls_of(self, method: str) -> list[Any]:
        return [req for name, req in self.calls if name == method]

    async def _twirp(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if ctype not in ("application/protobuf", "application/json"):
                raise TwirpFail(400, "malformed", f"unexpected Content-Type: {ctype!r}")
            claims = self._auth(request)
            if method not in self._methods:
                raise TwirpFail(404, "bad_route", f"no handler for RoomService/{method}")
            req_cls, handler = self._methods[method]
            raw = await request.read()
            try:
                req = (
                    req_cls.FromString(raw)
                    if ctype == "application/protobuf"
                    else json_format.Parse(raw, req_cls())
                )
            except (DecodeError, json_format.ParseError) as exc:
                raise TwirpFail(400, "malformed", f"cannot decode request: {exc}") from None
            self._check_grants(method, req, claims)
            self.calls.append((method, req))
            failure = self._fail.pop(method, None)
            if failure is not None:
                raise failure
            resp = await handler(req)
        except TwirpFail as f:
            return web.json_response({"code": f.code, "msg": f.msg}, status=f.status)
        if ctype == "application/json":
            return web.Response(
                text=json_format.MessageToJson(resp), content_type="application/json"
            )
        return web.Response(body=resp.SerializeToString(), content_type="application/protobuf")

    def _auth(self, request: web.Request) -> api.access_token.Claims:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise TwirpFail(401, "unauthenticated", "authorization header missing")
        try:
            return self.verifier.verify(header[7:].strip())
        except Exception as exc:
            raise TwirpFail(401, "unauthenticated", f"invalid token: {exc}") from None

    @staticmethod
    def _check_grants(method: str, req: Any, claims: api.access_token.Claims) -> None:
        video = claims.video or api.VideoGrants()
        if method in ("CreateRoom", "DeleteRoom"):
            ok = bool(video.room_create)
        elif method == "ListRooms":
            ok = bool(video.room_list)
        else:
            ok = bool(video.room_admin) and video.room == req.room
        if not ok:
            raise TwirpFail(403, "permission_denied", f"{method}: grant missing for this room")

    def _room(self, name: str) -> FakeRoom:
        room = self.rooms.get(name)
        if room is None:
            raise TwirpFail(404, "not_found", "requested room does not exist")
        return room

    def participant(self, room: str, identity: str) -> api.ParticipantInfo:
        p = self._room(room).participants.get(identity)
        if p is None:
            raise TwirpFail(404, "not_found", "participant not found")
        return p

    # -- RoomService --------------------------------------------------------------------------

    async def _create_room(self, req: api.CreateRoomRequest) -> api.Room:
        if not req.name:
            raise TwirpFail(400, "invalid_argument", "room name is required")
        room = self.rooms.get(req.name)
        if room is None:
            room = self.rooms[req.name] = FakeRoom(req.name, "RM_" + _hex(), req.empty_timeout)
        return room.info()

    async def _list_rooms(self, req: api.ListRoomsRequest) -> api.ListRoomsResponse:
        names = set(req.names)
        return api.ListRoomsResponse(
            rooms=[r.info() for r in self.rooms.values() if not names or r.name in names]
        )

    async def _delete_room(self, req: api.DeleteRoomRequest) -> api.DeleteRoomResponse:
        room = self._room(req.room)
        del self.rooms[req.room]
        for p in list(room.participants.values()):
            self._later(self.send_webhook("participant_left", room, p))
        self._later(self.send_webhook("room_finished", room))
        return api.DeleteRoomResponse()

    async def _list_participants(
        self, req: api.ListParticipantsRequest
    ) -> api.ListParticipantsResponse:
        return api.ListParticipantsResponse(
            participants=list(self._room(req.room).participants.values())
        )

    async def _get_participant(self, req: api.RoomParticipantIdentity) -> api.ParticipantInfo:
        return self.participant(req.room, req.identity)

    async def _update_participant(self, req: api.UpdateParticipantRequest) -> api.ParticipantInfo:
        p = self.participant(req.room, req.identity)
        if req.HasField("permission"):
            p.permission.CopyFrom(req.permission)
            # LiveKit unpublishes tracks a participant may no longer publish
            keep = [t for t in p.tracks if _may_publish(p.permission, t.source)]
            del p.tracks[:]
            p.tracks.extend(keep)
        if req.metadata:
            p.metadata = req.metadata
        for k, v in req.attributes.items():
            p.attributes[k] = v
        p.version += 1
        return p

    async def _mute_track(self, req: api.MuteRoomTrackRequest) -> api.MuteRoomTrackResponse:
        p = self.participant(req.room, req.identity)
        for track in p.tracks:
            if track.sid == req.track_sid:
                if not req.muted:
                    raise TwirpFail(403, "permission_denied", "remote unmute not enabled")
                track.muted = True
                return api.MuteRoomTrackResponse(track=track)
        raise TwirpFail(404, "not_found", "track not found")

    async def _remove_participant(
        self, req: api.RoomParticipantIdentity
    ) -> api.RemoveParticipantResponse:
        room = self._room(req.room)
        p = self.participant(req.room, req.identity)
        del room.participants[req.identity]
        self._later(self.send_webhook("participant_left", room, p))
        return api.RemoveParticipantResponse()

    # -- clients ------------------------------------------------------------------------------

    async def join(self, token: str, *, notify: bool = True) -> api.ParticipantInfo:
        """A client connects with its join token; raises PermissionError like LiveKit's
        signaling would refuse it. Sends participant_joined (awaited) when `notify`."""
        try:
            claims = self.verifier.verify(token)
        except Exception as exc:
            raise PermissionError(f"invalid token: {exc}") from None
        video = claims.video
        if video is None or not video.room_join or not video.room or not claims.identity:
            raise PermissionError("token has no room_join grant")
        room = self.rooms.get(video.room)
        if room is None:
            raise PermissionError("room does not exist (auto-create is off)")
        sources = [SOURCES[s] for s in video.can_publish_sources or []]
        p = api.ParticipantInfo(
            sid="PA_" + _hex(),
            identity=claims.identity,
            name=claims.name,
            state=api.ParticipantInfo.State.ACTIVE,
            joined_at=int(time.time()),
            permission=api.ParticipantPermission(
                can_subscribe=video.can_subscribe,
                can_publish=video.can_publish,
                can_publish_data=video.can_publish_data,
                can_publish_sources=sources,
            ),
        )
        for k, v in (claims.attributes or {}).items():
            p.attributes[k] = v
        room.participants[claims.identity] = p
        if notify:
            await self.send_webhook("participant_joined", room, p)
        return p

    def publish_track(self, room: str, identity: str, source: str = "microphone") -> str:
        """The participant publishes a track; refused without the permission."""
        p = self.participant(room, identity)
        src = SOURCES[source]
        if not _may_publish(p.permission, src):
            raise PermissionError(f"{identity} may not publish {source}")
        sid = "TR_" + _hex()
        kind = (
            api.TrackType.AUDIO
            if source in ("microphone", "screen_share_audio")
            else api.TrackType.VIDEO
        )
        p.tracks.append(api.TrackInfo(sid=sid, type=kind, source=src, muted=False))
        return sid

    async def leave(self, room: str, identity: str, *, notify: bool = True) -> None:
        r = self._room(room)
        p = r.participants.pop(identity)
        if notify:
            await self.send_webhook("participant_left", r, p)

    # -- webhooks -----------------------------------------------------------------------------

    def webhook_event(
        self, kind: str, room: FakeRoom | str, participant: api.ParticipantInfo | None = None
    ) -> api.WebhookEvent:
        info = room.info() if isinstance(room, FakeRoom) else api.Room(name=room)
        event = api.WebhookEvent(
            event=kind, room=info, id="EV_" + _hex(), created_at=int(time.time())
        )
        if participant is not None:
            event.participant.CopyFrom(participant)
        return event

    def sign(
        self,
        body: str,
        *,
        ttl: datetime.timedelta = datetime.timedelta(minutes=5),
        secret: str | None = None,
    ) -> str:
        """LiveKit's webhook Authorization value: a JWT carrying the body's sha256."""
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        return (
            api.AccessToken(self.api_key, secret or self.api_secret)
            .with_ttl(ttl)
            .with_sha256(digest)
            .to_jwt()
        )

    async def post_webhook(self, body: str, authorization: str) -> tuple[int, dict[str, Any]]:
        assert self.webhook_url, "set fake.webhook_url to the server's /v1/webhooks/livekit"
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                self.webhook_url,
                data=body.encode(),
                headers={
                    "Authorization": authorization,
                    "Content-Type": "application/webhook+json",
                },
            ) as r,
        ):
            return r.status, await r.json()

    async def send_webhook(
        self, kind: str, room: FakeRoom | str, participant: api.ParticipantInfo | None = None
    ) -> int:
        if not self.webhook_url:
            return 0
        body = json_format.MessageToJson(self.webhook_event(kind, room, participant))
        status, _ = await self.post_webhook(body, self.sign(body))
        self.webhook_results.append((kind, status))
        return status

    def _later(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for webhooks sent in the background (LiveKit sends them asynchronously)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _may_publish(perm: api.ParticipantPermission, source: int) -> bool:
    return perm.can_publish and (not perm.can_publish_sources or source in perm.can_publish_sources)
