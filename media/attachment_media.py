"""Cloudflare for message attachments (`CloudflareAttachments`): an image goes to Cloudflare
Images (direct creator upload v2; signed delivery URLs with the Images URL signing key), a
voice note or a video to Stream (basic direct upload with `requireSignedURLs`; signed playback
tokens with the Stream signing key). Every object is private: it is served only through a
signed, expiring URL.

Messaging declares what it needs (`messaging.attachments.AttachmentMedia`); app.py hands it
this object, and hands the media feature messaging's `AttachmentStates`, so that Stream's
webhook about an attachment's video marks the attachment instead of publishing
`content.created` (media/video.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from config import Settings
from media import cloudflare
from media.cloudflare import StreamAPI
from server.errors import ApiError, Code

IMAGE_VARIANT = "public"  # the variant every Images account has
IMAGE_DELIVERY_URL = "https://imagedelivery.net"
STREAM_DELIVERY_URL = "https://videodelivery.net"  # when Stream named no customer domain


class AttachmentStates(Protocol):
    """Messaging's side: what Stream's webhook says about a video that may be an attachment."""

    async def provider_state(self, uid: str, state: str, playback_url: str | None) -> bool:
        """Record it; True when `uid` is an attachment's (the webhook then stops there)."""
        ...


def stream_state(video: dict[str, Any] | None) -> tuple[str, str | None]:
    """(pending | ready | error, HLS URL) of a Stream video object."""
    if video is None:
        return "error", None
    status = video.get("status") or {}
    state = status.get("state") if isinstance(status, dict) else None
    playback = video.get("playback") or {}
    hls = playback.get("hls") if isinstance(playback, dict) else None
    if video.get("readyToStream") is True or state == "ready":
        return "ready", hls if isinstance(hls, str) else None
    return ("error" if state == "error" else "pending"), None


class CloudflareAttachments:
    """Implements messaging's `AttachmentMedia` on Cloudflare Images and Stream."""

    def __init__(self, settings: Settings, stream: StreamAPI | None) -> None:
        self.settings = settings
        self.stream = stream

    @property
    def api(self) -> StreamAPI:
        if self.stream is None:
            raise ApiError(
                Code.UNAVAILABLE,
                "attachments need Cloudflare; set "
                + ", ".join(cloudflare.missing_settings(self.settings)),
            )
        return self.stream

    async def create_upload(
        self, kind: str, *, uploader: str, max_duration_s: int | None, expires_at: datetime
    ) -> tuple[str, str]:
        if kind == "image":
            self._image_keys()  # refuse an upload that could never be served
            return await self.api.image_direct_upload(
                creator=uploader, expiry=expires_at, require_signed=True
            )
        self._stream_keys()
        result = await self.api.direct_upload(
            creator=uploader,
            max_duration_s=max_duration_s or 60,
            require_signed=True,
            expiry=expires_at,
            meta={"kind": f"attachment:{kind}"},
        )
        return str(result["uid"]), str(result["uploadURL"])

    async def state(self, kind: str, uid: str) -> tuple[str, str | None]:
        if kind == "image":
            image = await self.api.image(uid)
            if image is None:
                return "error", None
            return ("pending" if image.get("draft") else "ready"), None
        return stream_state(await self.api.video(uid))

    def signed_url(
        self, kind: str, uid: str, playback_url: str | None, ttl_s: int
    ) -> tuple[str, datetime]:
        if kind == "image":
            account_hash, key = self._image_keys()
            return cloudflare.sign_image_url(
                IMAGE_DELIVERY_URL, account_hash, uid, IMAGE_VARIANT, key=key, ttl_s=ttl_s
            )
        key_id, pem = self._stream_keys()
        token, exp = cloudflare.sign_playback(uid, key_id=key_id, key_pem=pem, ttl_s=ttl_s)
        hls = playback_url or f"{STREAM_DELIVERY_URL}/{uid}/manifest/video.m3u8"
        # Stream's signed URLs put the token where the video uid was
        return hls.replace(f"/{uid}/", f"/{token}/", 1), exp

    async def delete(self, kind: str, uid: str) -> None:
        if kind == "image":
            await self.api.delete_image(uid)
        else:
            await self.api.delete_video(uid)

    def _image_keys(self) -> tuple[str, str]:
        s = self.settings
        if not (s.cloudflare_images_account_hash and s.cloudflare_images_signing_key):
            raise ApiError(
                Code.UNAVAILABLE,
                "image attachments need OURS_CLOUDFLARE_IMAGES_ACCOUNT_HASH and "
                "OURS_CLOUDFLARE_IMAGES_SIGNING_KEY",
            )
        return s.cloudflare_images_account_hash, s.cloudflare_images_signing_key

    def _stream_keys(self) -> tuple[str, str]:
        s = self.settings
        if not (s.cloudflare_signing_key_id and s.cloudflare_signing_key_pem):
            raise ApiError(
                Code.UNAVAILABLE,
                "voice and video attachments need OURS_CLOUDFLARE_SIGNING_KEY_ID and "
                "OURS_CLOUDFLARE_SIGNING_KEY_PEM",
            )
        return s.cloudflare_signing_key_id, s.cloudflare_signing_key_pem
