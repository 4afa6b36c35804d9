"""Cloudflare Stream over its HTTP API (aiohttp, one base URL): direct creator uploads (basic
and tus), live inputs, webhook signatures, and signed playback tokens; and, for message
attachments, Stream videos' state and deletion and Cloudflare Images' direct uploads (v2),
state, deletion and signed delivery URLs (same account, same API token)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import jwt

from config import Settings
from server import jsonutil
from server.clock import utcnow
from server.errors import ApiError, Code

log = logging.getLogger("ours.media.cloudflare")

BASIC_UPLOAD_MAX = 200 * 1024 * 1024  # Stream's basic direct uploads take up to 200 MB
SIGNATURE_TOLERANCE_S = 300
PLAYBACK_TTL_S = 3600
PLAYBACK_TTL_MAX_S = 24 * 3600  # Stream refuses tokens valid for longer


def missing_settings(settings: Settings) -> list[str]:
    wanted = {
        "OURS_CLOUDFLARE_ACCOUNT_ID": settings.cloudflare_account_id,
        "OURS_CLOUDFLARE_API_TOKEN": settings.cloudflare_api_token,
    }
    return [name for name, value in wanted.items() if not value]


class StreamAPI:
    """The Stream endpoints this server uses, under /accounts/{account_id}/stream."""

    def __init__(self, settings: Settings) -> None:
        self.base = settings.cloudflare_base_url.rstrip("/")
        self.account = str(settings.cloudflare_account_id)
        self._token = str(settings.cloudflare_api_token)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def _stream(self) -> str:
        return f"{self.base}/accounts/{self.account}/stream"

    async def direct_upload(
        self,
        *,
        creator: str,
        max_duration_s: int,
        require_signed: bool,
        expiry: datetime,
        meta: dict[str, str],
    ) -> dict[str, Any]:
        """One-time upload URL for a basic (single POST) upload; returns {uid, uploadURL}."""
        body = {
            "maxDurationSeconds": max_duration_s,
            "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creator": creator,
            "requireSignedURLs": require_signed,
            "meta": meta,
        }
        _, _, data = await self._request("POST", f"{self._stream}/direct_upload", json=body)
        result = data.get("result") or {}
        if not result.get("uid") or not result.get("uploadURL"):
            raise _unavailable("direct_upload answered without uid/uploadURL")
        return dict(result)

    async def tus_upload(
        self,
        *,
        creator: str,
        size: int,
        max_duration_s: int,
        require_signed: bool,
        expiry: datetime,
        name: str | None,
    ) -> tuple[str, str]:
        """A resumable (tus) upload created for the end user; returns (uid, upload URL)."""
        meta = [
            f"maxdurationseconds {_b64(str(max_duration_s))}",
            f"expiry {_b64(expiry.strftime('%Y-%m-%dT%H:%M:%SZ'))}",
        ]
        if require_signed:
            meta.append("requiresignedurls")
        if name:
            meta.append(f"name {_b64(name)}")
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(size),
            "Upload-Creator": creator,
            "Upload-Metadata": ",".join(meta),
        }
        status, resp_headers, _ = await self._request(
            "POST", self._stream, params={"direct_user": "true"}, headers=headers
        )
        location = resp_headers.get("Location")
        uid = resp_headers.get("stream-media-id")
        if status != 201 or not location or not uid:
            raise _unavailable("tus upload answered without Location/stream-media-id")
        return uid, location

    async def create_live_input(
        self, *, creator: str, name: str | None, recording: bool, require_signed: bool
    ) -> dict[str, Any]:
        body = {
            "meta": {"name": name or f"live input of {creator}"},
            "defaultCreator": creator,
            "recording": {
                "mode": "automatic" if recording else "off",
                "requireSignedURLs": require_signed,
            },
        }
        _, _, data = await self._request("POST", f"{self._stream}/live_inputs", json=body)
        result = data.get("result") or {}
        rtmps = result.get("rtmps") or {}
        if not result.get("uid") or not rtmps.get("url") or not rtmps.get("streamKey"):
            raise _unavailable("live_inputs answered without uid/rtmps")
        return dict(result)

    # -- message attachments: Stream videos by uid, Cloudflare Images ----------------------

    async def video(self, uid: str) -> dict[str, Any] | None:
        """The video object (`readyToStream`, `status`, `playback`); None when there is none."""
        status, _, data = await self._request("GET", f"{self._stream}/{uid}", allow=(404,))
        return None if status == 404 else dict(data.get("result") or {})

    async def delete_video(self, uid: str) -> None:
        """Delete a video; one already gone counts as deleted."""
        await self._request("DELETE", f"{self._stream}/{uid}", allow=(404,))

    @property
    def _images(self) -> str:
        return f"{self.base}/accounts/{self.account}/images"

    async def image_direct_upload(
        self, *, creator: str, expiry: datetime, require_signed: bool
    ) -> tuple[str, str]:
        """Images' direct creator upload (v2, a multipart form): (image id, upload URL)."""
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("requireSignedURLs", "true" if require_signed else "false")
        form.add_field("expiry", expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))
        form.add_field("creator", creator)
        _, _, data = await self._request("POST", f"{self._images}/v2/direct_upload", form=form)
        result = data.get("result") or {}
        if not result.get("id") or not result.get("uploadURL"):
            raise _unavailable("images direct_upload answered without id/uploadURL")
        return str(result["id"]), str(result["uploadURL"])

    async def image(self, image_id: str) -> dict[str, Any] | None:
        """The image's details (`draft` until the file is uploaded); None when there is none."""
        status, _, data = await self._request("GET", f"{self._images}/v1/{image_id}", allow=(404,))
        return None if status == 404 else dict(data.get("result") or {})

    async def delete_image(self, image_id: str) -> None:
        """Delete an image; one already gone counts as deleted."""
        await self._request("DELETE", f"{self._images}/v1/{image_id}", allow=(404,))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        form: aiohttp.FormData | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if self._session is None:
            raise RuntimeError("Cloudflare client not started")
        hdrs = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        try:
            async with self._session.request(
                method, url, json=json, data=form, headers=hdrs, params=params
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unavailable(f"unreachable ({type(exc).__name__})") from None
        try:
            data = jsonutil.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if status < 300 or status in allow:
            return status, resp_headers, data
        messages = "; ".join(
            str(e.get("message", "")) for e in data.get("errors") or [] if isinstance(e, dict)
        )
        log.warning("cloudflare call failed", extra={"status": status, "error": messages[:200]})
        if status == 429:
            retry_raw = resp_headers.get("Retry-After", "")
            retry = int(retry_raw) if retry_raw.isdigit() else 60
            raise ApiError(
                Code.RATE_LIMITED,
                f"Cloudflare Stream is rate limiting; retry in {retry} s",
                {"retry_after": retry},
            )
        if status in (401, 403):
            raise _unavailable("refused our credentials (check OURS_CLOUDFLARE_API_TOKEN)")
        if status < 500:
            raise ApiError(Code.BAD_REQUEST, f"Cloudflare Stream refused: {messages or status}")
        raise _unavailable(f"error {status}")


def _unavailable(what: str) -> ApiError:
    return ApiError(Code.UNAVAILABLE, f"Cloudflare Stream {what}; try again later")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- webhooks ---------------------------------------------------------------------------------


def sign_webhook(body: bytes, secret: str, at: int | None = None) -> str:
    """The Webhook-Signature header value Stream sends: time=<unix>,sig1=<hex hmac>."""
    ts = str(int(time.time()) if at is None else at)
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"time={ts},sig1={mac}"


def verify_webhook(
    header: str | None, body: bytes, secret: str, *, tolerance: int = SIGNATURE_TOLERANCE_S
) -> None:
    """Raise ApiError(unauthorized) unless `header` signs `body` with `secret`, recently."""
    parts: dict[str, str] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        parts[key] = value
    ts, sig = parts.get("time", ""), parts.get("sig1", "")
    if not ts.isdigit() or not sig:
        raise ApiError(Code.UNAUTHORIZED, "missing Webhook-Signature: time=...,sig1=...")
    if abs(time.time() - int(ts)) > tolerance:
        raise ApiError(Code.UNAUTHORIZED, "stale webhook signature (time outside 5 minutes)")
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig):
        raise ApiError(Code.UNAUTHORIZED, "webhook signature does not match")


# -- signed playback --------------------------------------------------------------------------


def sign_playback(
    uid: str,
    *,
    key_id: str,
    key_pem: str,
    ttl_s: int = PLAYBACK_TTL_S,
    access_rules: list[dict[str, Any]] | None = None,
) -> tuple[str, datetime]:
    """A Stream signed-URL token (RS256, kid = signing key id, sub = video uid)."""
    pem = key_pem.strip()
    if not pem.startswith("-----BEGIN"):
        pem = base64.b64decode(pem).decode()
    ttl_s = max(60, min(ttl_s, PLAYBACK_TTL_MAX_S))
    now = utcnow()
    exp = now + timedelta(seconds=ttl_s)
    claims: dict[str, Any] = {
        "sub": uid,
        "kid": key_id,
        "exp": int(exp.timestamp()),
        "nbf": int(now.timestamp()) - 60,
    }
    if access_rules:
        claims["accessRules"] = access_rules
    token = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": key_id})
    return token, exp


def sign_image_url(
    delivery_url: str, account_hash: str, image_id: str, variant: str, *, key: str, ttl_s: int
) -> tuple[str, datetime]:
    """An Images signed URL: `exp` and `sig`, the hex HMAC-SHA256 (the Images URL signing key)
    of the path and `?exp=...`, as Cloudflare's edge checks it."""
    exp = utcnow() + timedelta(seconds=ttl_s)
    path = f"/{account_hash}/{image_id}/{variant}?exp={int(exp.timestamp())}"
    sig = hmac.new(key.encode(), path.encode(), hashlib.sha256).hexdigest()
    return f"{delivery_url.rstrip('/')}{path}&sig={sig}", exp
