"""Notification preferences (`notification_prefs`): one document per user; a user without a
row has the defaults."""

from __future__ import annotations

import asyncpg

from routing.preferences import Preferences
from server.storage import Store


class PreferenceStore(Store):
    async def load(
        self, user_ids: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, Preferences]:
        """Every user's preferences (inside the caller's transaction when `conn` is given)."""
        rows = await (conn or self.storage.db).fetch(
            "SELECT user_id, prefs FROM notification_prefs WHERE user_id = ANY($1::text[])",
            user_ids,
        )
        stored = {r["user_id"]: Preferences.model_validate(r["prefs"]) for r in rows}
        default = Preferences()
        return {u: stored.get(u, default) for u in user_ids}

    async def get(self, user_id: str) -> Preferences:
        return (await self.load([user_id]))[user_id]

    async def save(self, user_id: str, prefs: Preferences) -> None:
        await self.storage.db.execute(
            "INSERT INTO notification_prefs (user_id, prefs) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET prefs = EXCLUDED.prefs, updated_at = now()",
            user_id,
            prefs.model_dump(mode="json"),
        )
