"""HTTP routes of the video side: POST /v1/media/uploads, POST /v1/media/live-inputs,
GET /v1/media/{uid}/playback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from media import webhooks
from media.webhooks import MEDIA, media_feature
from server.errors import ApiError, Code, validate
from server.http_api import envelope, read_json, require_caller, require_user

Zone = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Uid = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["video", "short"] = "video"
    title: Title | None = None
    zone: Zone | None = None
    max_duration_s: Annotated[int, Field(ge=1, le=21_600)] = 3600
    require_signed_urls: bool = False
    size_bytes: Annotated[int, Field(ge=1, le=30 * 1024**3)] | None = None


class LiveInputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    zone: Zone | None = None
    recording: bool = True
    require_signed_urls: bool = False


if TYPE_CHECKING:
    from media.feature import MediaFeature

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], raw: object) -> M:
    return validate(model, raw if raw is not None else {})


async def post_upload(request: web.Request) -> web.Response:
    principal = require_user(request)
    req = _parse(UploadRequest, await read_json(request))
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


async def post_live_input(request: web.Request) -> web.Response:
    principal = require_user(request)
    req = _parse(LiveInputRequest, await read_json(request) if request.can_read_body else {})
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


async def get_playback(request: web.Request) -> web.Response:
    uid = request.match_info["uid"]
    if not (0 < len(uid) <= 64 and uid.isalnum()):
        raise ApiError(Code.BAD_REQUEST, "uid is the Stream video id")
    caller = require_caller(request)
    # the platform backend (API key) decides entitlement itself
    principal = None if isinstance(caller, str) else caller
    try:
        ttl = int(request.query.get("ttl", "3600"))
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, "ttl is seconds (60-86400)") from None
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
