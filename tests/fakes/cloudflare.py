"""A fake Cloudflare Stream API for tests: direct creator uploads (basic and tus), live inputs,
the one-time upload URLs, signing keys, and webhooks signed like Stream's
(`Webhook-Signature: time=<unix>,sig1=<hex HMAC-SHA256 of "time.body">`); a video's details
and its deletion; and Cloudflare Images' direct creator upload (v2, a multipart form), image
details (`draft` until uploaded), deletion and signed delivery URLs (`exp`, `sig`).

Errors follow Cloudflare's envelope: {"success": false, "errors": [{code, message}], ...}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CUSTOMER = "customer-f33zs165nr7gyfy4.cloudflarestream.com"


def _uid() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ok(result: Any, status: int = 200) -> web.Response:
    return web.json_response(
        {"result": result, "success": True, "errors": [], "messages": []}, status=status
    )


def _err(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {
            "result": None,
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
        },
        status=status,
        headers=headers,
    )


class FakeCloudflare:
    def __init__(
        self,
        account_id: str = "023e105f4ecef8ad9ca31a8372d0c353",
        api_token: str = "cf-test-token",
        webhook_secret: str = "85011ed3a913c6ad5f9cf6c5573cc0a7",
    ) -> None:
        self.account_id = account_id
        self.api_token = api_token
        self.webhook_secret = webhook_secret
        self.videos: dict[str, dict[str, Any]] = {}
        self.live_inputs: dict[str, dict[str, Any]] = {}
        self.signing_keys: dict[str, Any] = {}  # id -> public key
        self.images: dict[str, dict[str, Any]] = {}
        self.deleted: list[tuple[str, str]] = []  # ("stream" | "images", id), in order
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._fail: list[web.Response] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def base_url(self) -> str:
        return f"{self.url}/client/v4"

    async def start(self, port: int) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        acc = "/client/v4/accounts/{account}/stream"
        app.router.add_post(acc + "/direct_upload", self._direct_upload)
        app.router.add_post(acc, self._tus_create)
        app.router.add_post(acc + "/live_inputs", self._live_input)
        app.router.add_post("/upload/{uid}", self._upload)
        app.router.add_get(acc + "/{uid}", self._video)
        app.router.add_delete(acc + "/{uid}", self._delete_video)
        images = "/client/v4/accounts/{account}/images"
        app.router.add_post(images + "/v2/direct_upload", self._image_direct_upload)
        app.router.add_get(images + "/v1/{id}", self._image)
        app.router.add_delete(images + "/v1/{id}", self._delete_image)
        app.router.add_post("/image-upload/{id}", self._image_upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail_next(self, status: int = 429, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        message = "Too many requests" if status == 429 else "Internal error"
        self._fail.append(_err(status, 10000 if status != 429 else 971, message, headers))

    def _check(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_token}":
            return _err(403, 10000, "Authentication error")
        if request.match_info.get("account") != self.account_id:
            return _err(403, 10000, "Authentication error")
        if self._fail:
            return self._fail.pop(0)
        return None

    # -- API ------------------------------------------------------------------------------------

    async def _direct_upload(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.requests.append(("POST", "direct_upload", body))
        max_s = body.get("maxDurationSeconds")
        if not isinstance(max_s, int) or not 1 <= max_s <= 21600:
            return _err(400, 10005, "maxDurationSeconds must be between 1 and 21600")
        uid = _uid()
        self.videos[uid] = {
            "uid": uid,
            "creator": body.get("creator"),
            "meta": body.get("meta") or {},
            "requireSignedURLs": bool(body.get("requireSignedURLs")),
            "maxDurationSeconds": max_s,
            "state": "pendingupload",
        }
        return _ok(
            {
                "uploadURL": f"{self.url}/upload/{uid}",
                "uid": uid,
                "watermark": None,
                "scheduledDeletion": None,
            }
        )

    async def _tus_create(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        if request.query.get("direct_user") != "true":
            return _err(400, 10005, "tus uploads for end users need ?direct_user=true")
        if request.headers.get("Tus-Resumable") != "1.0.0":
            return _err(400, 10005, "Tus-Resumable: 1.0.0 is required")
        length = request.headers.get("Upload-Length", "")
        if not length.isdigit() or int(length) <= 0:
            return _err(400, 10005, "Upload-Length is required")
        meta: dict[str, str] = {}
        for item in request.headers.get("Upload-Metadata", "").split(","):
            key, _, value = item.strip().partition(" ")
            if key:
                meta[key] = base64.b64decode(value).decode() if value else ""
        self.requests.append(("POST", "tus", {"length": int(length), "metadata": meta}))
        uid = _uid()
        self.videos[uid] = {
            "uid": uid,
            "creator": request.headers.get("Upload-Creator"),
            "meta": {"name": meta.get("name", "")},
            "requireSignedURLs": "requiresignedurls" in meta,
            "maxDurationSeconds": int(meta.get("maxdurationseconds", "0") or 0),
            "state": "pendingupload",
        }
        return web.Response(
            status=201,
            headers={
                "Location": f"{self.url}/tus/{uid}?tusv2=true",
                "stream-media-id": uid,
                "Tus-Resumable": "1.0.0",
            },
        )

    async def _live_input(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.requests.append(("POST", "live_inputs", body))
        uid = _uid()
        key = "k" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
        result = {
            "uid": uid,
            "rtmps": {"url": "rtmps://live.cloudflare.com:443/live/", "streamKey": key},
            "rtmpsPlayback": {
                "url": "rtmps://live.cloudflare.com:443/live/",
                "streamKey": "p" + key,
            },
            "srt": {
                "url": "srt://live.cloudflare.com:778",
                "streamId": uid,
                "passphrase": key[:16],
            },
            "webRTC": {"url": f"https://{CUSTOMER}/{key}/webRTC/publish"},
            "created": _now(),
            "modified": _now(),
            "meta": body.get("meta") or {},
            "status": None,
            "recording": body.get("recording") or {"mode": "off"},
            "defaultCreator": body.get("defaultCreator"),
        }
        self.live_inputs[uid] = result
        return _ok(result, status=201)

    async def _upload(self, request: web.Request) -> web.Response:
        video = self.videos.get(request.match_info["uid"])
        if video is None or video["state"] != "pendingupload":
            return _err(400, 10005, "upload URL is invalid or already used")
        await request.read()
        video["state"] = "queued"
        return web.Response(status=200)

    async def _video(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        uid = request.match_info["uid"]
        if uid not in self.videos:
            return _err(404, 10003, "Not Found")
        v = self.videos[uid]
        if v["state"] == "ready":
            return _ok(self.ready_video(uid))
        return _ok(
            {
                "uid": uid,
                "creator": v["creator"],
                "readyToStream": False,
                "status": {"state": v["state"], "errorReasonCode": "", "errorReasonText": ""},
                "requireSignedURLs": v["requireSignedURLs"],
                "meta": v["meta"],
                "playback": None,
            }
        )

    async def _delete_video(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        uid = request.match_info["uid"]
        self.requests.append(("DELETE", "stream", {"uid": uid}))
        if self.videos.pop(uid, None) is None:
            return _err(404, 10003, "Not Found")
        self.deleted.append(("stream", uid))
        return web.Response(status=200)

    # -- Images ---------------------------------------------------------------------------------

    async def _image_direct_upload(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        if not request.content_type.startswith("multipart/form-data"):
            return _err(415, 5415, "direct_upload takes multipart/form-data")
        form = dict(await request.post())
        self.requests.append(("POST", "images/direct_upload", form))
        image_id = str(uuid.uuid4())
        self.images[image_id] = {
            "id": image_id,
            "creator": form.get("creator"),
            "requireSignedURLs": form.get("requireSignedURLs") == "true",
            "expiry": form.get("expiry"),
            "draft": True,
        }
        return _ok({"id": image_id, "uploadURL": f"{self.url}/image-upload/{image_id}"})

    async def _image_upload(self, request: web.Request) -> web.Response:
        image = self.images.get(request.match_info["id"])
        if image is None or not image["draft"]:
            return _err(400, 5400, "upload URL is invalid or already used")
        form = await request.post()
        if "file" not in form:
            return _err(400, 5400, "the image goes in the form field `file`")
        image["draft"] = False
        return _ok({"id": image["id"], "draft": False})

    async def _image(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        image = self.images.get(request.match_info["id"])
        if image is None:
            return _err(404, 5404, "Image not found")
        out = {
            "id": image["id"],
            "requireSignedURLs": image["requireSignedURLs"],
            "uploaded": _now(),
            "variants": []
            if image["draft"]
            else [f"https://imagedelivery.net/h/{image['id']}/public"],
        }
        return _ok({**out, "draft": True} if image["draft"] else out)

    async def _delete_image(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        image_id = request.match_info["id"]
        self.requests.append(("DELETE", "images", {"id": image_id}))
        if self.images.pop(image_id, None) is None:
            return _err(404, 5404, "Image not found")
        self.deleted.append(("images", image_id))
        return _ok({})

    def check_image_url(self, url: str, key: str) -> dict[str, Any]:
        """What Images' edge does with a signed URL: the HMAC-SHA256 of path + `?exp=` with
        the URL signing key, and `exp` not passed. Returns {hash, id, variant, exp} or raises."""
        rest = url.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1]
        signed, _, sig = path.rpartition("&sig=")
        expected = hmac.new(key.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig):
            raise PermissionError("bad signature")
        route, _, query = signed.partition("?")
        exp = int(query.removeprefix("exp="))
        if exp < time.time():
            raise PermissionError("expired")
        account_hash, image_id, variant = route.strip("/").split("/")
        image = self.images.get(image_id)
        if image is None or image["draft"]:
            raise PermissionError("no such uploaded image")
        return {"hash": account_hash, "id": image_id, "variant": variant, "exp": exp}

    # -- what Stream sends --------------------------------------------------------------------

    def ready_video(self, uid: str, duration: float = 5.5) -> dict[str, Any]:
        """The video object of a finished encode (the body of the "ready" webhook)."""
        v = self.videos[uid]
        v["state"] = "ready"
        return {
            "uid": uid,
            "creator": v["creator"],
            "thumbnail": f"https://{CUSTOMER}/{uid}/thumbnails/thumbnail.jpg",
            "thumbnailTimestampPct": 0,
            "readyToStream": True,
            "status": {
                "state": "ready",
                "pctComplete": "100.000000",
                "errorReasonCode": "",
                "errorReasonText": "",
            },
            "meta": v["meta"],
            "created": _now(),
            "modified": _now(),
            "size": 4190963,
            "preview": f"https://{CUSTOMER}/{uid}/watch",
            "allowedOrigins": [],
            "requireSignedURLs": v["requireSignedURLs"],
            "uploaded": _now(),
            "uploadExpiry": None,
            "maxSizeBytes": None,
            "maxDurationSeconds": v["maxDurationSeconds"],
            "duration": duration,
            "input": {"width": 1920, "height": 1080},
            "playback": {
                "hls": f"https://{CUSTOMER}/{uid}/manifest/video.m3u8",
                "dash": f"https://{CUSTOMER}/{uid}/manifest/video.mpd",
            },
            "watermark": None,
        }

    def live_notification(self, input_id: str, event_type: str) -> dict[str, Any]:
        updated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        return {
            "name": "OURS live",
            "text": f"Notification type: Stream Live Input\nInput ID: {input_id}\n"
            f"Event type: {event_type}\nUpdated at: {updated}",
            "data": {
                "notification_name": "Stream Live Input",
                "input_id": input_id,
                "event_type": event_type,
                "updated_at": updated,
            },
            "ts": int(time.time()),
        }

    def signature(self, body: bytes, at: int | None = None, secret: str | None = None) -> str:
        ts = str(int(time.time()) if at is None else at)
        key = (secret or self.webhook_secret).encode()
        mac = hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return f"time={ts},sig1={mac}"

    async def post_webhook(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as r,
        ):
            return r.status, await r.json()

    # -- signed URLs ----------------------------------------------------------------------------

    def create_signing_key(self) -> tuple[str, str]:
        """Like POST /stream/keys: (key id, base64 PEM private key)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = uuid.uuid4().hex
        self.signing_keys[key_id] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_id, base64.b64encode(pem).decode()

    def check_playback(self, url: str) -> dict[str, Any]:
        """What Stream's edge does with a signed URL: the token replaces the uid in the path;
        verify it with the signing key named by its kid. Returns the claims or raises."""
        token = url.split(f"{CUSTOMER}/", 1)[1].split("/", 1)[0]
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.signing_keys:
            raise PermissionError("unknown signing key")
        claims = jwt.decode(token, self.signing_keys[kid], algorithms=["RS256"])
        video = self.videos.get(claims["sub"])
        if video is None or video["state"] != "ready":
            raise PermissionError("no such ready video")
        return dict(claims)
