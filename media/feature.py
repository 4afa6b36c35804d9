"""The media feature: LiveKit audio rooms and Cloudflare Stream video, wired into the node.
Without LiveKit or Cloudflare settings the routes and events stay, and answer `unavailable`
naming the settings to set."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from media import cloudflare, http, livekit
from media.attachment_media import AttachmentStates, CloudflareAttachments
from media.cloudflare import StreamAPI
from media.livekit import LiveKit
from media.stage import AUDIO_ENDED, NAMESPACE, AudioRooms, audio_room
from media.stage_store import StageStore
from media.video import Videos
from media.video_store import VideoStore
from server.clock import utcnow
from server.feature import Feature
from server.personal_data import Erasure

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.media")

PRUNE_JOB = "media.receipts_prune"
RECEIPT_DAYS = 7  # providers retry for hours; signatures are valid for minutes


class MediaFeature(Feature):
    name = "media"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.livekit = None if livekit.missing_settings(s) else LiveKit(s)
        self.stream = None if cloudflare.missing_settings(s) else StreamAPI(s)
        self.stage_store = StageStore(node.storage)
        self.video_store = VideoStore(node.storage)
        self.audio = AudioRooms(node, self.stage_store, self.livekit)
        self.videos = Videos(node, self.video_store, self.stream)
        #: message attachments' objects (messaging's `AttachmentMedia`, handed in by app.py)
        self.attachments = CloudflareAttachments(s, self.stream)
        node.scheduler.register(PRUNE_JOB, self._prune_receipts)

    def route_attachment_webhooks(self, states: AttachmentStates) -> None:
        """Stream webhooks about attachments' videos go to `states` (messaging's), not to
        `content.created`."""
        self.videos.attachment_states = states

    def routes(self, app: web.Application) -> None:
        http.add_routes(app, self)

    async def start(self) -> None:
        await self._schedule_prune()
        if self.livekit is not None:
            await self.livekit.start()
        if self.stream is not None:
            await self.stream.start()
        log.info(
            "media ready",
            extra={"livekit": self.livekit is not None, "cloudflare": self.stream is not None},
        )

    async def stop(self) -> None:
        if self.livekit is not None:
            await self.livekit.close()
        if self.stream is not None:
            await self.stream.close()

    # -- a user's data ------------------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        return {
            "audio": await self.stage_store.export_user(user_id),
            "media": await self.video_store.export_user(user_id),
        }

    async def erase_user(self, erasure: Erasure) -> None:
        """Audio rooms they host and their memberships, their videos and live inputs; after
        the commit, live rooms they hosted are ended (LiveKit, `audio:ended` to the room) and
        they are taken out of the LiveKit rooms they were in."""
        hosted, seats = await self.stage_store.erase_user(erasure)
        await self.video_store.erase_user(erasure)
        if hosted or seats:
            user_id = erasure.user_id

            async def after() -> int:
                await self._end_erased(user_id, hosted, seats)
                return 0

            erasure.after(after)

    async def _end_erased(self, user_id: str, hosted: list[str], seats: list[str]) -> None:
        for room_id in seats:
            try:
                if self.livekit is not None:
                    await self.livekit.remove(room_id, user_id)
            except Exception:
                log.warning("removing an erased user from LiveKit failed", exc_info=True)
        for room_id in hosted:
            try:
                if self.livekit is not None:
                    await self.livekit.delete_room(room_id)
                await self.node.fanout.emit(
                    AUDIO_ENDED,
                    {"room_id": room_id, "reason": "the host's account was deleted"},
                    namespace=NAMESPACE,
                    room=audio_room(room_id),
                )
            except Exception:
                log.warning("ending an erased host's audio room failed", exc_info=True)

    async def _prune_receipts(self, payload: dict[str, Any]) -> None:
        removed = await self.stage_store.prune_receipts(RECEIPT_DAYS)
        log.info("webhook receipts pruned", extra={"removed": removed})
        await self._schedule_prune()

    async def _schedule_prune(self) -> None:
        """Once a day at 03:00 UTC; the key makes every process schedule the same job."""
        day = utcnow().date() + timedelta(days=1)
        run_at = datetime.combine(day, time(3, 0), tzinfo=UTC)
        await self.node.scheduler.schedule(PRUNE_JOB, f"{PRUNE_JOB}:{day.isoformat()}", run_at)
