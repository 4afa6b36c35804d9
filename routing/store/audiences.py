"""Audiences (`audiences`, `audience_members`): recipient lists the platform registers (a
creator's followers, say) and names in an event instead of listing its recipients; the router
reads them page by page, in user-id order."""

from __future__ import annotations

import asyncpg

from server.storage import Store


class AudienceStore(Store):
    async def change(
        self, audience_id: str, add: list[str], remove: list[str]
    ) -> tuple[int, int, int]:
        """Add and remove members (the audience is created when missing); returns (added,
        removed, members now). Adding a member twice or removing a stranger changes nothing."""
        async with self.storage.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO audiences (id) VALUES ($1)"
                " ON CONFLICT (id) DO UPDATE SET updated_at = now()",
                audience_id,
            )
            removed = await _count(
                conn,
                "DELETE FROM audience_members WHERE audience_id = $1 AND user_id = ANY($2::text[])",
                audience_id,
                remove,
            )
            added = await _count(
                conn,
                "INSERT INTO audience_members (audience_id, user_id)"
                " SELECT $1, u FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING",
                audience_id,
                add,
            )
            total = await conn.fetchval(
                "SELECT count(*) FROM audience_members WHERE audience_id = $1", audience_id
            )
        return added, removed, int(total)

    async def size(self, audience_id: str) -> int | None:
        """How many members; None when there is no such audience."""
        row = await self.storage.db.fetchrow(
            "SELECT (SELECT count(*) FROM audience_members m WHERE m.audience_id = a.id) AS n"
            " FROM audiences a WHERE a.id = $1",
            audience_id,
        )
        return None if row is None else int(row["n"])

    async def page(self, audience_id: str, after: str, limit: int) -> list[str]:
        """Members after `after` ("" from the start), in user-id order."""
        rows = await self.storage.db.fetch(
            "SELECT user_id FROM audience_members WHERE audience_id = $1 AND user_id > $2"
            " ORDER BY user_id LIMIT $3",
            audience_id,
            after,
            limit,
        )
        return [r["user_id"] for r in rows]

    async def delete(self, audience_id: str) -> bool:
        status = await self.storage.db.execute("DELETE FROM audiences WHERE id = $1", audience_id)
        return bool(status.endswith(" 1"))

    async def of_user(self, user_id: str) -> list[str]:
        """The audiences the user is a member of (the export)."""
        rows = await self.storage.db.fetch(
            "SELECT audience_id FROM audience_members WHERE user_id = $1 ORDER BY audience_id",
            user_id,
        )
        return [r["audience_id"] for r in rows]


async def _count(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    status = await conn.execute(sql, *args)
    return int(status.split()[-1])
