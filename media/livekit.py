"""LiveKit through livekit-api: room lifecycle, per-role join tokens and participant permissions
(RoomService over Twirp), and webhook verification (WebhookReceiver)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable
from typing import Any, Literal

import aiohttp
from google.protobuf.json_format import ParseError
from livekit import api

from config import Settings
from server.errors import ApiError, Code

log = logging.getLogger("ours.media.livekit")

Role = Literal["host", "moderator", "speaker", "listener"]
TOKEN_TTL = datetime.timedelta(minutes=10)
MIC = "microphone"


def missing_settings(settings: Settings) -> list[str]:
    """The LiveKit settings that are not set (audio rooms need all of them)."""
    wanted = {
        "OURS_LIVEKIT_URL": settings.livekit_url,
        "OURS_LIVEKIT_WS_URL": settings.livekit_ws_url,
        "OURS_LIVEKIT_API_KEY": settings.livekit_api_key,
        "OURS_LIVEKIT_API_SECRET": settings.livekit_api_secret,
    }
    return [name for name, value in wanted.items() if not value]


def publishes(role: Role) -> bool:
    return role != "listener"


def grants_for(role: Role, room: str) -> api.VideoGrants:
    """The join grants of a role: the host and moderators administer the room and publish,
    speakers publish their microphone, listeners only subscribe (and send data: reactions)."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        room_admin=True if role in ("host", "moderator") else None,
        can_publish=publishes(role),
        can_publish_sources=[MIC] if publishes(role) else [],
        can_subscribe=True,
        can_publish_data=True,
    )


def permission_for(role: Role) -> api.ParticipantPermission:
    """The in-room permission LiveKit applies when a participant's role changes."""
    return api.ParticipantPermission(
        can_subscribe=True,
        can_publish=publishes(role),
        can_publish_data=True,
        can_publish_sources=[api.TrackSource.MICROPHONE] if publishes(role) else [],
    )


class LiveKit:
    """One LiveKit deployment: RoomService calls, join tokens, webhook receiver."""

    def __init__(self, settings: Settings) -> None:
        missing = missing_settings(settings)
        if missing:
            raise ValueError("LiveKit needs " + ", ".join(missing))
        self.url = str(settings.livekit_url)
        self.ws_url = str(settings.livekit_ws_url)
        self._key = str(settings.livekit_api_key)
        self._secret = str(settings.livekit_api_secret)
        self._api: api.LiveKitAPI | None = None
        self.receiver = api.WebhookReceiver(api.TokenVerifier(self._key, self._secret))

    async def start(self) -> None:
        self._api = api.LiveKitAPI(
            url=self.url,
            api_key=self._key,
            api_secret=self._secret,
            timeout=aiohttp.ClientTimeout(total=5),
        )

    async def close(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    @property
    def rooms(self) -> api.room_service.RoomService:
        if self._api is None:
            raise RuntimeError("LiveKit client not started")
        return self._api.room

    def join_token(self, room: str, identity: str, role: Role) -> tuple[str, int]:
        """A short-lived token for one user in one room, its grants matching the role."""
        token = (
            api.AccessToken(self._key, self._secret)
            .with_identity(identity)
            .with_name(identity)
            .with_ttl(TOKEN_TTL)
            .with_attributes({"role": role})
            .with_grants(grants_for(role, room))
            .to_jwt()
        )
        return token, int(TOKEN_TTL.total_seconds())

    # -- RoomService ------------------------------------------------------------------------
    # Each call returns False when LiveKit does not know the room or participant (nobody
    # connected yet, or already gone); any other failure becomes `unavailable`.

    async def create_room(self, room: str, *, empty_timeout: int = 300) -> None:
        await self._call(
            "CreateRoom",
            self.rooms.create_room(api.CreateRoomRequest(name=room, empty_timeout=empty_timeout)),
        )

    async def delete_room(self, room: str) -> bool:
        return await self._call(
            "DeleteRoom", self.rooms.delete_room(api.DeleteRoomRequest(room=room))
        )

    async def set_role(self, room: str, identity: str, role: Role) -> bool:
        return await self._call(
            "UpdateParticipant",
            self.rooms.update_participant(
                api.UpdateParticipantRequest(
                    room=room,
                    identity=identity,
                    permission=permission_for(role),
                    attributes={"role": role},
                )
            ),
        )

    async def remove(self, room: str, identity: str) -> bool:
        return await self._call(
            "RemoveParticipant",
            self.rooms.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            ),
        )

    async def mute_microphone(self, room: str, identity: str) -> int | None:
        """Mute every microphone track the participant publishes; None when not connected."""
        try:
            info = await self.rooms.get_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return None
            raise self._unavailable("GetParticipant", exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable("GetParticipant", exc) from None
        muted = 0
        for track in info.tracks:
            if track.type == api.TrackType.AUDIO and not track.muted:
                done = await self._call(
                    "MutePublishedTrack",
                    self.rooms.mute_published_track(
                        api.MuteRoomTrackRequest(
                            room=room, identity=identity, track_sid=track.sid, muted=True
                        )
                    ),
                )
                muted += int(done)
        return muted

    async def _call(self, method: str, call: Awaitable[Any]) -> bool:
        try:
            await call
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return False
            raise self._unavailable(method, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(method, exc) from None
        return True

    @staticmethod
    def _unavailable(method: str, exc: BaseException) -> ApiError:
        detail = (
            f"{exc.code}: {exc.message}" if isinstance(exc, api.TwirpError) else type(exc).__name__
        )
        log.warning("livekit call failed", extra={"method": method, "error": detail})
        return ApiError(Code.UNAVAILABLE, f"LiveKit {method} failed ({detail}); try again")

    # -- webhooks ---------------------------------------------------------------------------

    def verify_webhook(self, body: str, authorization: str) -> api.WebhookEvent:
        """The event, or ApiError(unauthorized) for a forged, tampered or expired delivery."""
        token = authorization.removeprefix("Bearer ").strip()
        if not token:
            raise ApiError(Code.UNAUTHORIZED, "missing Authorization (LiveKit webhook token)")
        try:
            return self.receiver.receive(body, token)
        except ParseError:
            raise ApiError(Code.BAD_REQUEST, "webhook body is not a LiveKit WebhookEvent") from None
        except Exception as exc:  # forged or expired token (jwt errors), body hash mismatch
            raise ApiError(
                Code.UNAUTHORIZED, f"webhook not verified: {type(exc).__name__}"
            ) from None
