"""HTTP routes of the video side: POST /v1/media/uploads, POST /v1/media/live-inputs,
GET /v1/media/{uid}/playback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from media import webhooks
from media.webhooks import MEDIA, media_feature
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.http_api import (
    USER,
    Query,
    envelope,
    path_params,
    query,
    read_body,
    require_caller,
    require_user,
)
from server.openapi import operation

Zone = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Uid = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


def _json_integer(v: Any) -> Any:
    """JSON Schema's integer: 60 and 60.0, not "60" or true (the strict models refuse the
    float, the lax ones take the string)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


#: an integer of a strict body model, as JSON Schema counts them (after its constraints)
JsonInteger = BeforeValidator(_json_integer)


class UploadRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # what the handler checks, for the document: a short names its duration, <= 60 s
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "short"}}, "required": ["kind"]},
            "then": {
                "required": ["max_duration_s"],
                "properties": {"max_duration_s": {"maximum": 60}},
            },
        },
    )

    kind: Literal["video", "short"] = "video"
    title: Title | None = None
    zone: Zone | None = None
    max_duration_s: Annotated[int, Field(ge=1, le=21_600), JsonInteger] = 3600
    require_signed_urls: bool = False
    size_bytes: Annotated[int, Field(ge=1, le=30 * 1024**3), JsonInteger] | None = None


class LiveInputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Title | None = None
    zone: Zone | None = None
    recording: bool = True
    require_signed_urls: bool = False


class PlaybackPath(BaseModel):
    uid: Uid = Field(description="the Stream video id")


class PlaybackQuery(Query):
    ttl: Annotated[int, Field(ge=60, le=86_400)] = Field(
        3600, description="seconds a signed token stays valid (private videos)"
    )


class UploadCreated(Outgoing):
    uid: str = Field(description="the Stream video id (the content id once it is ready)")
    upload_url: str = Field(description="where the client sends the file, once")
    protocol: Literal["basic", "tus"] = Field(
        description="basic: one POST (multipart, up to 200 MB); tus: resumable (larger files)"
    )
    expires_at: str = Field(description="ISO 8601: the URL works until then")
    max_duration_s: int


class LiveInputCreated(Outgoing):
    uid: str = Field(description="the live input's id (the live id)")
    rtmps_url: str = Field(description="the RTMPS ingest URL for the broadcasting software")
    stream_key: str = Field(description="the secret stream key: in this answer only")
    stream_key_shown_once: Literal[True]
    live_room: str = Field(description="the room viewers join: live:<uid>")


class Playback(Outgoing):
    uid: str
    signed: bool = Field(description="true: a private video, the URLs carry a signed token")
    hls: str | None = Field(description="the HLS manifest URL")
    dash: str | None = Field(description="the DASH manifest URL")
    token: str | None = Field(description="the signed playback token (private videos)")
    expires_at: str | None = Field(
        None, description="ISO 8601: when the token expires (private videos only)"
    )


if TYPE_CHECKING:
    from media.feature import MediaFeature

_UID = "ea95132c15732412d22c1476fa83f27a"  # of the examples


@operation(
    "A one-time upload URL for a video or a short (Cloudflare Stream)",
    UploadCreated,
    status=201,
    security=USER,
    body=UploadRequest,
    errors=(Code.FORBIDDEN,),
    example={
        "uid": "ea95132c15732412d22c1476fa83f27a",
        "upload_url": "https://upload.videodelivery.net/ea95132c15732412d22c1476fa83f27a",
        "protocol": "basic",
        "expires_at": "2025-01-05T19:00:00+00:00",
        "max_duration_s": 3600,
    },
)
async def post_upload(request: web.Request) -> web.Response:
    """For creators and admins. Basic (one POST) up to 200 MB, tus (resumable) when
    `size_bytes` is larger; a short is at most 60 seconds. When the encode is ready, Stream's
    webhook publishes `content.created`."""
    principal = require_user(request)
    req = await read_body(request, UploadRequest)
    if req.kind == "short" and req.max_duration_s > 60:
        raise ApiError(Code.BAD_REQUEST, "a short is at most 60 seconds (max_duration_s <= 60)")
    data = await media_feature(request).videos.create_upload(
        principal,
        kind=req.kind,
        title=req.title,
        zone=req.zone,
        max_duration_s=req.max_duration_s,
        require_signed=req.require_signed_urls,
        size_bytes=req.size_bytes,
    )
    return envelope(request, data, status=201)


@operation(
    "A live input (RTMPS URL and stream key) for going live with video",
    LiveInputCreated,
    status=201,
    security=USER,
    body=LiveInputRequest,
    body_required=False,
    errors=(Code.FORBIDDEN,),
    example={
        "uid": "f256e6ea9341d51eea64c9454659e576",
        "rtmps_url": "rtmps://live.cloudflare.com:443/live/",
        "stream_key": "MTQ0MTcjM3MjI1NDE3ODIyNTI1MjYyMjE4NTI2ODI1NDcxMzUy",
        "stream_key_shown_once": True,
        "live_room": "live:f256e6ea9341d51eea64c9454659e576",
    },
)
async def post_live_input(request: web.Request) -> web.Response:
    """For creators and admins. The stream key is in this answer only (`Cache-Control:
    no-store`); it is stored sealed. Connecting and disconnecting publish `live.started` and
    `live.ended`."""
    principal = require_user(request)
    req = await read_body(request, LiveInputRequest, required=False)
    data = await media_feature(request).videos.create_live_input(
        principal,
        title=req.title,
        zone=req.zone,
        recording=req.recording,
        require_signed=req.require_signed_urls,
    )
    resp = envelope(request, data, status=201)
    resp.headers["Cache-Control"] = "no-store"  # the stream key is in this body only
    return resp


@operation(
    "Playback URLs of a ready video; a signed token for a private one",
    Playback,
    security=("apiKey", "userJwt"),
    path=PlaybackPath,
    query=PlaybackQuery,
    errors=(Code.FORBIDDEN, Code.NOT_FOUND, Code.CONFLICT),
    example={
        "uid": "ea95132c15732412d22c1476fa83f27a",
        "signed": False,
        "hls": f"https://customer-abc.cloudflarestream.com/{_UID}/manifest/video.m3u8",
        "dash": f"https://customer-abc.cloudflarestream.com/{_UID}/manifest/video.mpd",
        "token": None,
    },
)
async def get_playback(request: web.Request) -> web.Response:
    """A private video plays for its creator, moderators and admins with a user token; the
    platform's backend (an API key) decides entitlement itself and gets a token for anyone.
    `conflict` while the video is not ready."""
    uid = path_params(request, PlaybackPath).uid
    caller = require_caller(request)
    # the platform backend (API key) decides entitlement itself
    principal = None if isinstance(caller, str) else caller
    ttl = query(request, PlaybackQuery).ttl
    data = await media_feature(request).videos.playback(uid, principal=principal, ttl_s=ttl)
    resp = envelope(request, data)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def add_routes(app: web.Application, feature: MediaFeature) -> None:
    app[MEDIA] = feature
    app.router.add_post("/v1/media/uploads", post_upload)
    app.router.add_post("/v1/media/live-inputs", post_live_input)
    app.router.add_get("/v1/media/{uid}/playback", get_playback)
    webhooks.add_routes(app)
