"""Provider webhooks: POST /v1/webhooks/livekit (a JWT over the body's sha256, checked by
livekit-api's WebhookReceiver) and POST /v1/webhooks/cloudflare (Stream's Webhook-Signature
HMAC, time-bounded; or the Notifications `cf-webhook-auth` secret for live inputs).
Unverified deliveries get 401 and change nothing."""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from media import cloudflare
from server import jsonutil
from server.errors import ApiError, Code
from server.http_api import NODE, envelope

if TYPE_CHECKING:
    from media.feature import MediaFeature

log = logging.getLogger("ours.media.webhooks")


#: the media feature, for its routes (set by `media.http.add_routes`)
MEDIA: web.AppKey[MediaFeature] = web.AppKey("media.feature")


def media_feature(request: web.Request) -> MediaFeature:
    return request.app[MEDIA]


async def _raw_body(request: web.Request) -> bytes:
    limit = request.app[NODE].settings.max_payload_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError(Code.PAYLOAD_TOO_LARGE, f"body over {limit} bytes")
    return body


async def livekit_webhook(request: web.Request) -> web.Response:
    media = media_feature(request)
    lk = media.audio.lk
    body = await _raw_body(request)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ApiError(Code.BAD_REQUEST, "body is not UTF-8") from None
    event = lk.verify_webhook(text, request.headers.get("Authorization", ""))
    outcome = await media.audio.on_webhook(event)
    log.info("livekit webhook", extra={"kind": event.event, "outcome": outcome})
    return envelope(request, {"event": event.event, "outcome": outcome})


async def cloudflare_webhook(request: web.Request) -> web.Response:
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
    if not isinstance(payload, dict):
        raise ApiError(Code.BAD_REQUEST, "webhook body must be a JSON object")
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
