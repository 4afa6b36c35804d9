"""SQL of Cloudflare Stream media rows and live inputs."""

from __future__ import annotations

from typing import Any

import asyncpg

from server.personal_data import Erasure, records
from server.storage import Store


class VideoStore(Store):
    # -- a user's data (the assets at Cloudflare are the platform's to delete) ----------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        db = self.storage.db
        return {
            "videos": records(
                await db.fetch(
                    "SELECT * FROM media WHERE creator_id = $1 ORDER BY created_at", user_id
                )
            ),
            "live_inputs": records(
                await db.fetch(
                    "SELECT * FROM live_inputs WHERE creator_id = $1 ORDER BY created_at",
                    user_id,
                ),
                drop=("stream_key",),
            ),
        }

    async def erase_user(self, e: Erasure) -> None:
        await e.execute("live_inputs", "DELETE FROM live_inputs WHERE creator_id = $1", e.user_id)
        await e.execute("media", "DELETE FROM media WHERE creator_id = $1", e.user_id)

    async def add_media(
        self,
        uid: str,
        *,
        creator_id: str,
        kind: str,
        title: str | None,
        zone: str | None,
        require_signed: bool,
        protocol: str,
    ) -> None:
        await self.storage.db.execute(
            "INSERT INTO media (uid, creator_id, kind, title, zone, require_signed,"
            " upload_protocol) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            uid,
            creator_id,
            kind,
            title,
            zone,
            require_signed,
            protocol,
        )

    async def media(self, uid: str) -> dict[str, Any] | None:
        row = await self.storage.db.fetchrow("SELECT * FROM media WHERE uid = $1", uid)
        return dict(row) if row else None

    async def mark_ready(
        self, conn: asyncpg.Connection, uid: str, video: dict[str, Any]
    ) -> dict[str, Any]:
        """Ready (inserting the row for a video first seen here); return the row."""
        playback = video.get("playback") or {}
        meta = video.get("meta") or {}
        row = await conn.fetchrow(
            "INSERT INTO media (uid, creator_id, kind, title, require_signed, upload_protocol,"
            "  state, hls_url, dash_url, thumbnail_url, duration_s, ready_at)"
            " VALUES ($1, $2, 'video', $3, $4, 'webhook', 'ready', $5, $6, $7, $8, now())"
            " ON CONFLICT (uid) DO UPDATE SET state = 'ready', hls_url = EXCLUDED.hls_url,"
            "  dash_url = EXCLUDED.dash_url, thumbnail_url = EXCLUDED.thumbnail_url,"
            "  duration_s = EXCLUDED.duration_s, ready_at = now(), error_reason = NULL"
            " RETURNING *",
            uid,
            _text(video.get("creator")),
            _text(meta.get("name")),
            bool(video.get("requireSignedURLs")),
            _text(playback.get("hls")),
            _text(playback.get("dash")),
            _text(video.get("thumbnail")),
            float(video["duration"]) if isinstance(video.get("duration"), int | float) else None,
        )
        return dict(row)

    async def mark_error(self, conn: asyncpg.Connection, uid: str, reason: str) -> bool:
        status = await conn.execute(
            "UPDATE media SET state = 'error', error_reason = $2 WHERE uid = $1", uid, reason[:500]
        )
        return bool(status.endswith(" 1"))

    async def add_live_input(
        self,
        uid: str,
        *,
        creator_id: str,
        title: str | None,
        zone: str | None,
        rtmps_url: str,
        sealed_key: bytes,
    ) -> None:
        await self.storage.db.execute(
            "INSERT INTO live_inputs (uid, creator_id, title, zone, rtmps_url, stream_key)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            uid,
            creator_id,
            title,
            zone,
            rtmps_url,
            sealed_key,
        )

    async def live_input_locked(self, conn: asyncpg.Connection, uid: str) -> dict[str, Any] | None:
        row = await conn.fetchrow("SELECT * FROM live_inputs WHERE uid = $1 FOR UPDATE", uid)
        return dict(row) if row else None

    async def set_live_state(self, conn: asyncpg.Connection, uid: str, state: str) -> None:
        await conn.execute(
            "UPDATE live_inputs SET state = $2,"
            " started_at = CASE WHEN $2 = 'live' THEN now() ELSE started_at END WHERE uid = $1",
            uid,
            state,
        )


def _text(value: Any) -> str | None:
    return value[:2048] if isinstance(value, str) and value else None
