"""Provider webhooks: POST /v1/webhooks/livekit (a JWT over the body's sha256, checked by
livekit-api's WebhookReceiver) and POST /v1/webhooks/cloudflare (Stream's Webhook-Signature
HMAC, time-bounded; or the Notifications `cf-webhook-auth` secret for live inputs).
Unverified deliveries get 401 and change nothing."""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from media import cloudflare
from server import jsonutil
from server.contract import Outgoing
from server.errors import ApiError, Code, validate
from server.http_api import NODE, envelope
from server.openapi import Header, operation

if TYPE_CHECKING:
    from media.feature import MediaFeature

log = logging.getLogger("ours.media.webhooks")


#: the media feature, for its routes (set by `media.http.add_routes`)
MEDIA: web.AppKey[MediaFeature] = web.AppKey("media.feature")


class _Provider(BaseModel):
    """A provider's own format: only the fields the server reads, any others allowed."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamStatus(_Provider):
    state: str | None = Field(None, description="ready, error, inprogress, queued, ...")
    errorReasonCode: str | None = None
    errorReasonText: str | None = None


class LiveInputNotice(_Provider):
    event_type: str | None = Field(
        None, description="live_input.connected, live_input.disconnected (others are ignored)"
    )
    input_id: str | None = Field(None, description="the live input's uid")
    updated_at: str | None = Field(None, description="ISO 8601 (a delivery's identity)")


class CloudflareWebhook(_Provider):
    """A Stream video webhook (the video object: `uid`, `readyToStream`, `status`) or a
    Cloudflare Notification about a live input (`data`, `ts`)."""

    uid: str | None = Field(None, description="the video's uid (Stream video webhooks)")
    readyToStream: bool | None = None
    status: StreamStatus | None = None
    data: LiveInputNotice | None = Field(None, description="a live-input notification")
    ts: int | None = Field(
        None, description="unix seconds of a notification (required with cf-webhook-auth)"
    )


class LiveKitWebhook(_Provider):
    """LiveKit's `WebhookEvent` (protobuf JSON): the fields the server reads; the rest of
    LiveKit's fields are allowed and ignored."""

    model_config = ConfigDict(extra="allow")

    event: str = Field(description="e.g. participant_joined, participant_left, room_finished")
    id: str | None = Field(None, description="the delivery's id (a replay is a duplicate)")
    createdAt: str | int | None = Field(None, description="unix seconds")
    room: dict[str, Any] | None = Field(None, description="LiveKit's Room: `name`, `sid`, ...")
    participant: dict[str, Any] | None = Field(
        None, description="LiveKit's ParticipantInfo: `identity`, `sid`, ..."
    )


class LiveKitHandled(Outgoing):
    event: str = Field(description="the LiveKit event, e.g. participant_joined")
    outcome: Literal[
        "applied",
        "no change",
        "ended",
        "ignored",
        "unknown room",
        "duplicate",
        "room already ended",
    ] = Field(description="what the delivery did (a replay is a duplicate and does nothing)")


class CloudflareHandled(Outgoing):
    outcome: Literal[
        "content.created",
        "error recorded",
        "live.started",
        "live.ended",
        "ignored",
        "unknown live input",
        "duplicate",
        "attachment",
    ] = Field(
        description="what the delivery did: the event it published, or why none; `attachment`:"
        " the video is a message attachment's, its state recorded (no event)"
    )


def media_feature(request: web.Request) -> MediaFeature:
    return request.app[MEDIA]


async def _raw_body(request: web.Request) -> bytes:
    limit = request.app[NODE].settings.max_payload_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError(Code.PAYLOAD_TOO_LARGE, f"body over {limit} bytes")
    return body


@operation(
    "LiveKit's webhook: participants joining and leaving audio rooms, rooms finishing",
    LiveKitHandled,
    security=("livekitSignature",),
    body=LiveKitWebhook,
    body_media=("application/webhook+json", "application/json"),
    errors=(Code.BAD_REQUEST, Code.PAYLOAD_TOO_LARGE),
    example={"event": "participant_joined", "outcome": "applied"},
)
async def livekit_webhook(request: web.Request) -> web.Response:
    """The body is LiveKit's own `WebhookEvent` (protobuf JSON, sent as
    `application/webhook+json`), verified with its signature (a JWT signed with the API secret
    whose `sha256` claim is the body's hash) and parsed by livekit-api. Each delivery is
    applied once; `unavailable` when LiveKit is not configured."""
    media = media_feature(request)
    lk = media.audio.lk
    body = await _raw_body(request)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ApiError(Code.BAD_REQUEST, "body is not UTF-8") from None
    event = lk.verify_webhook(text, request.headers.get("Authorization", ""))
    validate(LiveKitWebhook, jsonutil.loads(text), "LiveKit webhook", object_only=True)
    outcome = await media.audio.on_webhook(event)
    log.info("livekit webhook", extra={"kind": event.event, "outcome": outcome})
    return envelope(request, {"event": event.event, "outcome": outcome})


@operation(
    "Cloudflare's webhooks: Stream videos ready or failed, live inputs connected or disconnected",
    CloudflareHandled,
    security=("cloudflareSignature",),
    body=CloudflareWebhook,
    headers=(
        Header(
            "cf-webhook-auth",
            "instead of Webhook-Signature, for Cloudflare Notifications (live inputs): the"
            " destination's secret (OURS_CLOUDFLARE_NOTIFICATION_SECRET); `ts` then bounds"
            " the delivery in time",
        ),
    ),
    example={"outcome": "content.created"},
)
async def cloudflare_webhook(request: web.Request) -> web.Response:
    """The body is Cloudflare's own (the fields read are declared, any others allowed),
    verified before it is read: Stream's `Webhook-Signature` (an HMAC of the body, at most 5
    minutes old), or a Notification's `cf-webhook-auth` secret. Each delivery is applied once:
    a ready video publishes `content.created`, a live input `live.started` / `live.ended`.
    `unavailable` when OURS_CLOUDFLARE_WEBHOOK_SECRET is not set."""
    media = media_feature(request)
    settings = request.app[NODE].settings
    body = await _raw_body(request)
    signature = request.headers.get("Webhook-Signature")
    notification_auth = request.headers.get("cf-webhook-auth")
    if signature is not None or not notification_auth:
        if not settings.cloudflare_webhook_secret:
            raise ApiError(Code.UNAVAILABLE, "Stream webhooks need OURS_CLOUDFLARE_WEBHOOK_SECRET")
        cloudflare.verify_webhook(signature, body, settings.cloudflare_webhook_secret)
        payload = _json(body)
    else:
        payload = _json(body)
        _verify_notification(notification_auth, payload, settings.cloudflare_notification_secret)
    validate(CloudflareWebhook, payload, "webhook body", object_only=True)
    assert isinstance(payload, dict)
    outcome = await media.videos.on_webhook(payload)
    log.info("cloudflare webhook", extra={"outcome": outcome})
    return envelope(request, {"outcome": outcome})


def _verify_notification(auth: str, payload: object, secret: str | None) -> None:
    """Cloudflare Notifications (live input connected/disconnected) authenticate with the
    destination's secret in `cf-webhook-auth`; `ts` bounds the delivery in time."""
    if not secret:
        raise ApiError(
            Code.UNAUTHORIZED,
            "cf-webhook-auth is accepted only with OURS_CLOUDFLARE_NOTIFICATION_SECRET set",
        )
    if not hmac.compare_digest(auth.encode(), secret.encode()):
        raise ApiError(Code.UNAUTHORIZED, "cf-webhook-auth does not match")
    ts = payload.get("ts") if isinstance(payload, dict) else None
    if not isinstance(ts, int) or abs(time.time() - ts) > cloudflare.SIGNATURE_TOLERANCE_S:
        raise ApiError(Code.UNAUTHORIZED, "stale or undated notification (ts outside 5 minutes)")


def _json(body: bytes) -> object:
    try:
        return jsonutil.loads(body)
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, "body is not valid JSON") from None


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks/livekit", livekit_webhook)
    app.router.add_post("/v1/webhooks/cloudflare", cloudflare_webhook)
