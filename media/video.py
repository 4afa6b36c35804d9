"""Video on Cloudflare Stream: creators get upload URLs and live inputs, Stream's webhooks become
events (`content.created`, `live.started`, `live.ended`) once each, and viewers of private
videos get signed playback tokens."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from media import cloudflare
from media.attachment_media import AttachmentStates, stream_state
from media.cloudflare import StreamAPI
from media.stage_store import claim_receipt
from media.video_store import VideoStore
from server.auth import Principal, Role
from server.clock import utcnow
from server.errors import ApiError, Code
from server.events import build_event
from server.policy import Action, require

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.media.video")

UPLOAD_URL_TTL = timedelta(hours=1)


def live_key_aad(uid: str) -> str:
    return f"live_input:{uid}"


class Videos:
    def __init__(self, node: Node, store: VideoStore, stream: StreamAPI | None) -> None:
        self.node = node
        self.store = store
        self.stream = stream
        #: messaging's attachments (handed in by app.py): their videos' webhooks go there
        self.attachment_states: AttachmentStates | None = None

    @property
    def api(self) -> StreamAPI:
        if self.stream is None:
            raise ApiError(
                Code.UNAVAILABLE,
                "video needs Cloudflare Stream; set "
                + ", ".join(cloudflare.missing_settings(self.node.settings)),
            )
        return self.stream

    # -- creators ---------------------------------------------------------------------------

    async def create_upload(
        self,
        principal: Principal,
        *,
        kind: str,
        title: str | None,
        zone: str | None,
        max_duration_s: int,
        require_signed: bool,
        size_bytes: int | None,
    ) -> dict[str, Any]:
        """A one-time upload URL: basic for up to 200 MB, tus (resumable) above or on request."""
        require(principal, Action.MEDIA_UPLOAD)
        stream = self.api
        expiry = utcnow() + UPLOAD_URL_TTL
        if size_bytes is not None and size_bytes > cloudflare.BASIC_UPLOAD_MAX:
            uid, url = await stream.tus_upload(
                creator=principal.user_id,
                size=size_bytes,
                max_duration_s=max_duration_s,
                require_signed=require_signed,
                expiry=expiry,
                name=title,
            )
            protocol = "tus"
        else:
            meta = {"name": title or "", "kind": kind}
            result = await stream.direct_upload(
                creator=principal.user_id,
                max_duration_s=max_duration_s,
                require_signed=require_signed,
                expiry=expiry,
                meta={k: v for k, v in meta.items() if v},
            )
            uid, url, protocol = str(result["uid"]), str(result["uploadURL"]), "basic"
        await self.store.add_media(
            uid,
            creator_id=principal.user_id,
            kind=kind,
            title=title,
            zone=zone,
            require_signed=require_signed,
            protocol=protocol,
        )
        log.info("upload created", extra={"uid": uid, "protocol": protocol})
        return {
            "uid": uid,
            "upload_url": url,
            "protocol": protocol,
            "expires_at": expiry.isoformat(),
            "max_duration_s": max_duration_s,
        }

    async def create_live_input(
        self,
        principal: Principal,
        *,
        title: str | None,
        zone: str | None,
        recording: bool,
        require_signed: bool,
    ) -> dict[str, Any]:
        """A live input; its stream key is returned here only and stored sealed."""
        require(principal, Action.MEDIA_UPLOAD)
        result = await self.api.create_live_input(
            creator=principal.user_id,
            name=title,
            recording=recording,
            require_signed=require_signed,
        )
        uid = str(result["uid"])
        rtmps = result["rtmps"]
        key = str(rtmps["streamKey"])
        await self.store.add_live_input(
            uid,
            creator_id=principal.user_id,
            title=title,
            zone=zone,
            rtmps_url=str(rtmps["url"]),
            sealed_key=self.node.keyring.seal_secret(key, live_key_aad(uid)),
        )
        log.info("live input created", extra={"uid": uid})
        return {
            "uid": uid,
            "rtmps_url": str(rtmps["url"]),
            "stream_key": key,
            "stream_key_shown_once": True,
            "live_room": f"live:{uid}",
        }

    # -- viewers ----------------------------------------------------------------------------

    async def playback(
        self, uid: str, *, principal: Principal | None, ttl_s: int
    ) -> dict[str, Any]:
        """Playback URLs; a signed token for a private video. `principal` None: the platform
        backend (API key), which decides entitlement itself."""
        row = await self.store.media(uid)
        if row is None:
            raise ApiError(Code.NOT_FOUND, "no such video")
        if row["state"] != "ready" or not row["hls_url"]:
            raise ApiError(Code.CONFLICT, f"the video is {row['state']}, not ready to play")
        out: dict[str, Any] = {"uid": uid, "signed": bool(row["require_signed"])}
        if not row["require_signed"]:
            return {**out, "hls": row["hls_url"], "dash": row["dash_url"], "token": None}
        if principal is not None and not (
            principal.user_id == row["creator_id"] or principal.role in (Role.ADMIN, Role.MODERATOR)
        ):
            raise ApiError(
                Code.FORBIDDEN,
                "a private video plays for its creator; others get tokens through the platform",
            )
        s = self.node.settings
        if not (s.cloudflare_signing_key_id and s.cloudflare_signing_key_pem):
            raise ApiError(
                Code.UNAVAILABLE,
                "signed playback needs OURS_CLOUDFLARE_SIGNING_KEY_ID and "
                "OURS_CLOUDFLARE_SIGNING_KEY_PEM",
            )
        token, exp = cloudflare.sign_playback(
            uid,
            key_id=s.cloudflare_signing_key_id,
            key_pem=s.cloudflare_signing_key_pem,
            ttl_s=ttl_s,
        )
        return {
            **out,
            "token": token,
            "expires_at": exp.isoformat(),
            "hls": _with_token(row["hls_url"], uid, token),
            "dash": _with_token(row["dash_url"], uid, token),
        }

    # -- webhooks ---------------------------------------------------------------------------

    async def on_webhook(self, body: dict[str, Any]) -> str:
        """Apply one verified Stream webhook or live-input notification; replays do nothing."""
        data = body.get("data")
        if isinstance(data, dict) and str(data.get("event_type", "")).startswith("live_input."):
            return await self._live_notification(data)
        uid = body.get("uid")
        if not isinstance(uid, str) or not 0 < len(uid) <= 64:
            raise ApiError(Code.BAD_REQUEST, "a Stream video webhook carries its uid")
        if self.attachment_states is not None:
            state_now, hls = stream_state(body)
            if await self.attachment_states.provider_state(uid, state_now, hls):
                return "attachment"
        status = body.get("status") or {}
        state = status.get("state") if isinstance(status, dict) else None
        if body.get("readyToStream") is True or state == "ready":
            return await self._video_ready(uid, body)
        if state == "error":
            async with self.node.storage.db.acquire() as conn, conn.transaction():
                if not await claim_receipt(conn, "cloudflare", f"video:{uid}:error"):
                    return "duplicate"
                reason = str(status.get("errorReasonText") or status.get("errorReasonCode") or "")
                await self.store.mark_error(conn, uid, reason or "processing failed")
            return "error recorded"
        return "ignored"

    async def _video_ready(self, uid: str, video: dict[str, Any]) -> str:
        async with self.node.storage.db.acquire() as conn, conn.transaction():
            if not await claim_receipt(conn, "cloudflare", f"video:{uid}:ready"):
                return "duplicate"
            row = await self.store.mark_ready(conn, uid, video)
            subjects = [f"content:{uid}"]
            if row["zone"]:
                subjects.append(f"zone:{row['zone']}")
            if row["creator_id"]:
                subjects.append(f"user:{row['creator_id']}")
            payload = {
                "content_id": uid,
                "kind": row["kind"],
                "creator_id": row["creator_id"],
                "title": row["title"],
                "zone": row["zone"],
                "url": None if row["require_signed"] else row["hls_url"],
            }
            # published before the receipt commits: a failure rolls the receipt back, so
            # Stream's retry publishes again, with the same event id (the bus drops repeats)
            await self._publish(
                "content.created", row["creator_id"], subjects, payload, f"video:{uid}:ready"
            )
        return "content.created"

    async def _live_notification(self, data: dict[str, Any]) -> str:
        input_id = str(data.get("input_id", ""))[:64]
        kind = str(data.get("event_type"))
        if kind not in ("live_input.connected", "live_input.disconnected"):
            return "ignored"
        receipt = f"live:{input_id}:{kind}:{str(data.get('updated_at', ''))[:64]}"
        async with self.node.storage.db.acquire() as conn, conn.transaction():
            row = await self.store.live_input_locked(conn, input_id)
            if row is None:
                return "unknown live input"
            if not await claim_receipt(conn, "cloudflare", receipt):
                return "duplicate"
            subjects = [f"live:{input_id}"] + ([f"zone:{row['zone']}"] if row["zone"] else [])
            creator = row["creator_id"]
            if kind == "live_input.connected":
                await self.store.set_live_state(conn, input_id, "live")
                payload: dict[str, Any] = {
                    "live_id": input_id,
                    "host_id": creator,
                    "kind": "video",
                    "title": row["title"],
                }
                await self._publish("live.started", creator, subjects, payload, receipt)
                return "live.started"
            await self.store.set_live_state(conn, input_id, "idle")
            payload = {"live_id": input_id, "host_id": creator}
            if row["state"] == "live" and row["started_at"] is not None:
                payload["duration_s"] = max(0, int((utcnow() - row["started_at"]).total_seconds()))
            await self._publish("live.ended", creator, subjects, payload, receipt)
            return "live.ended"

    async def _publish(
        self,
        type_: str,
        actor: str | None,
        subjects: list[str],
        payload: dict[str, Any],
        key: str,
    ) -> None:
        event = build_event(
            {
                "type": type_,
                "actor": actor,
                "subjects": subjects,
                "payload": {k: v for k, v in payload.items() if v is not None},
            },
            idempotency_key=key,
            scope="cloudflare",
        )
        await self.node.bus.publish(event)


def _with_token(url: str | None, uid: str, token: str) -> str | None:
    """Stream's signed URLs put the token where the video uid was."""
    return url.replace(f"/{uid}/", f"/{token}/", 1) if url else None
