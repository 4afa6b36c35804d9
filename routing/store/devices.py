"""The push registry (`push_devices`): FCM registration tokens, each of one user, at most
`max_per_user` per user (registering one more drops the user's least recently seen)."""

from __future__ import annotations

from server.storage import Store


class DeviceStore(Store):
    async def register(self, user_id: str, token: str, platform: str, max_per_user: int) -> int:
        """Upsert the token for this user; drop the user's oldest beyond the cap; return count."""
        async with self.storage.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO push_devices (token, user_id, platform) VALUES ($1, $2, $3)"
                " ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id,"
                " platform = EXCLUDED.platform, last_seen_at = now()",
                token,
                user_id,
                platform,
            )
            await conn.execute(
                "DELETE FROM push_devices WHERE user_id = $1 AND token IN ("
                " SELECT token FROM push_devices WHERE user_id = $1"
                " ORDER BY last_seen_at DESC OFFSET $2)",
                user_id,
                max_per_user,
            )
            return int(
                await conn.fetchval("SELECT count(*) FROM push_devices WHERE user_id = $1", user_id)
            )

    async def unregister(self, user_id: str, token: str) -> bool:
        status = await self.storage.db.execute(
            "DELETE FROM push_devices WHERE token = $1 AND user_id = $2", token, user_id
        )
        return bool(status.endswith(" 1"))

    async def of_user(self, user_id: str) -> list[tuple[str, str]]:
        return (await self.of_users([user_id])).get(user_id, [])

    async def of_users(self, user_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Each user's devices (token, platform), the most recently seen first; users without
        one are left out."""
        rows = await self.storage.db.fetch(
            "SELECT user_id, token, platform FROM push_devices"
            " WHERE user_id = ANY($1::text[]) ORDER BY user_id, last_seen_at DESC",
            user_ids,
        )
        out: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            out.setdefault(r["user_id"], []).append((r["token"], r["platform"]))
        return out

    async def prune(self, tokens: list[str]) -> int:
        """Forget tokens the provider called invalid; return how many went."""
        status = await self.storage.db.execute(
            "DELETE FROM push_devices WHERE token = ANY($1::text[])", tokens
        )
        return int(status.split()[-1])
