"""SQL for live chat: lives, messages (with tombstones and trimming), restrictions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from livechat.gate import Snapshot
from server.personal_data import Erasure, records
from server.storage import Store


class LiveChatStore(Store):
    # -- lives --------------------------------------------------------------------------------

    async def live_started(self, live_id: str, host_id: str, ts: datetime) -> bool:
        """Record a start unless a newer live.* event was applied already; True if applied."""
        status = await self.storage.db.execute(
            "INSERT INTO lives (id, host_id, state, started_at, event_ts)"
            " VALUES ($1, $2, 'live', $3, $3)"
            " ON CONFLICT (id) DO UPDATE SET host_id = EXCLUDED.host_id, state = 'live',"
            "  started_at = EXCLUDED.started_at, ended_at = NULL, event_ts = EXCLUDED.event_ts"
            " WHERE lives.event_ts <= EXCLUDED.event_ts",
            live_id,
            host_id,
            ts,
        )
        return bool(status.endswith(" 1"))

    async def live_ended(self, live_id: str, host_id: str | None, ts: datetime) -> bool:
        status = await self.storage.db.execute(
            "INSERT INTO lives (id, host_id, state, ended_at, event_ts)"
            " VALUES ($1, $2, 'ended', $3, $3)"
            " ON CONFLICT (id) DO UPDATE SET state = 'ended', ended_at = EXCLUDED.ended_at,"
            "  host_id = COALESCE(lives.host_id, EXCLUDED.host_id), event_ts = EXCLUDED.event_ts"
            " WHERE lives.event_ts <= EXCLUDED.event_ts",
            live_id,
            host_id,
            ts,
        )
        return bool(status.endswith(" 1"))

    async def live(self, live_id: str) -> asyncpg.Record | None:
        return await self.storage.db.fetchrow("SELECT * FROM lives WHERE id = $1", live_id)

    async def snapshot(self, live_id: str) -> Snapshot:
        """What the gate needs to admit a send in `live_id`, read in one statement."""
        row = await self.storage.db.fetchrow(
            "SELECT l.state, l.host_id, l.slow_mode_s,"
            " ARRAY(SELECT user_id FROM live_chat_restrictions"
            "       WHERE live_id = $1 AND kind = 'ban') AS bans,"
            " ARRAY(SELECT ARRAY[user_id, (extract(epoch FROM until) * 1000)::bigint::text]"
            "       FROM live_chat_restrictions"
            "       WHERE live_id = $1 AND kind = 'timeout' AND until > now()) AS timeouts"
            " FROM (SELECT 1) one LEFT JOIN lives l ON l.id = $1",
            live_id,
        )
        assert row is not None
        return Snapshot(
            state=row["state"] or "none",
            host_id=row["host_id"],
            slow_s=row["slow_mode_s"] or 0,
            bans=frozenset(row["bans"]),
            timeouts={u: int(ms) for u, ms in row["timeouts"]},
        )

    # -- messages -----------------------------------------------------------------------------

    async def insert_message(
        self, live_id: str, user_id: str, client_msg_id: str, body: str
    ) -> asyncpg.Record | None:
        """Insert; None when this user already sent `client_msg_id` in this live (a retry)."""
        return await self.storage.db.fetchrow(
            "INSERT INTO live_chat_messages (id, live_id, user_id, client_msg_id, body)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (live_id, user_id, client_msg_id) DO NOTHING"
            " RETURNING *",
            uuid.uuid4(),
            live_id,
            user_id,
            client_msg_id,
            body,
        )

    async def insert_messages(
        self, live_id: str, sends: list[tuple[str, str, str]]
    ) -> list[asyncpg.Record | None]:
        """Insert a run of (user_id, client_msg_id, body) in one statement, in order (their
        `seq` follows the run); each send's row, or None for a retry (of an earlier send, or
        of one earlier in this run)."""
        ids = [uuid.uuid4() for _ in sends]
        rows = await self.storage.db.fetch(
            "INSERT INTO live_chat_messages (id, live_id, user_id, client_msg_id, body)"
            " SELECT s.id, $1, s.user_id, s.client_msg_id, s.body"
            " FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY"
            "  AS s(id, user_id, client_msg_id, body, n) ORDER BY s.n"
            " ON CONFLICT (live_id, user_id, client_msg_id) DO NOTHING RETURNING *",
            live_id,
            ids,
            [u for u, _, _ in sends],
            [c for _, c, _ in sends],
            [b for _, _, b in sends],
        )
        by_id = {r["id"]: r for r in rows}
        return [by_id.get(i) for i in ids]

    async def message_by_client_id(
        self, live_id: str, user_id: str, client_msg_id: str
    ) -> asyncpg.Record | None:
        return await self.storage.db.fetchrow(
            "SELECT * FROM live_chat_messages"
            " WHERE live_id = $1 AND user_id = $2 AND client_msg_id = $3",
            live_id,
            user_id,
            client_msg_id,
        )

    async def recent(
        self, live_id: str, limit: int, before: uuid.UUID | None = None
    ) -> list[asyncpg.Record]:
        """The last `limit` messages not deleted (before message `before`), oldest first."""
        rows = await self.storage.db.fetch(
            "SELECT * FROM live_chat_messages WHERE live_id = $1 AND deleted_at IS NULL"
            " AND ($3::uuid IS NULL OR seq < (SELECT seq FROM live_chat_messages"
            "                                 WHERE id = $3 AND live_id = $1))"
            " ORDER BY seq DESC LIMIT $2",
            live_id,
            limit,
            before,
        )
        return list(reversed(rows))

    async def tombstone(
        self, conn: asyncpg.Connection, live_id: str, message_id: uuid.UUID, by: str
    ) -> tuple[asyncpg.Record | None, bool]:
        """Delete a message's body, keeping the row; (row, True) when this call deleted it."""
        row = await conn.fetchrow(
            "UPDATE live_chat_messages SET body = NULL, deleted_at = now(), deleted_by = $3"
            " WHERE id = $2 AND live_id = $1 AND deleted_at IS NULL RETURNING *",
            live_id,
            message_id,
            by,
        )
        if row is not None:
            return row, True
        return (
            await conn.fetchrow(
                "SELECT * FROM live_chat_messages WHERE id = $2 AND live_id = $1",
                live_id,
                message_id,
            ),
            False,
        )

    async def trim(self, keep: int, max_age_s: float) -> int:
        """Drop messages older than `max_age_s` and all but the last `keep` of each live; drop
        expired timeouts. Returns how many messages went."""
        db = self.storage.db
        old = await db.execute(
            "DELETE FROM live_chat_messages WHERE created_at < now() - make_interval(secs => $1)",
            max_age_s,
        )
        over = await db.execute(
            "DELETE FROM live_chat_messages m USING ("
            "  SELECT live_id, seq, row_number() OVER (PARTITION BY live_id ORDER BY seq DESC) AS n"
            "  FROM live_chat_messages WHERE live_id IN ("
            "   SELECT live_id FROM live_chat_messages GROUP BY live_id HAVING count(*) > $1)"
            " ) x WHERE x.n > $1 AND m.seq = x.seq",
            keep,
        )
        await db.execute(
            "DELETE FROM live_chat_restrictions WHERE kind = 'timeout' AND until < now()"
        )
        return int(old.split()[-1]) + int(over.split()[-1])

    # -- moderation: each change runs in a transaction that commits it with its audit record -

    async def set_slow_mode(self, conn: asyncpg.Connection, live_id: str, seconds: int) -> bool:
        status = await conn.execute(
            "UPDATE lives SET slow_mode_s = $2 WHERE id = $1", live_id, seconds
        )
        return bool(status.endswith(" 1"))

    async def restriction(
        self, conn: asyncpg.Connection, live_id: str, user_id: str
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(
            "SELECT * FROM live_chat_restrictions WHERE live_id = $1 AND user_id = $2",
            live_id,
            user_id,
        )

    async def restrict(
        self,
        conn: asyncpg.Connection,
        live_id: str,
        user_id: str,
        kind: str,
        until: datetime | None,
        by: str,
        reason: str | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO live_chat_restrictions (live_id, user_id, kind, until, by_user, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (live_id, user_id) DO UPDATE SET"
            " kind = EXCLUDED.kind, until = EXCLUDED.until, by_user = EXCLUDED.by_user,"
            " reason = EXCLUDED.reason, created_at = now()",
            live_id,
            user_id,
            kind,
            until,
            by,
            reason,
        )

    async def lift(
        self, conn: asyncpg.Connection, live_id: str, user_id: str
    ) -> asyncpg.Record | None:
        """Remove a ban or timeout; the removed row, or None when there was none."""
        return await conn.fetchrow(
            "DELETE FROM live_chat_restrictions WHERE live_id = $1 AND user_id = $2 RETURNING *",
            live_id,
            user_id,
        )

    # -- a user's data (export and erasure; see server/personal_data.py) ---------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        db = self.storage.db
        return {
            "messages": records(
                await db.fetch(
                    "SELECT id, live_id, body, created_at, deleted_at FROM live_chat_messages"
                    " WHERE user_id = $1 ORDER BY created_at",
                    user_id,
                )
            ),
            "restrictions": records(
                await db.fetch(
                    "SELECT live_id, kind, until, reason, created_at FROM live_chat_restrictions"
                    " WHERE user_id = $1",
                    user_id,
                )
            ),
        }

    async def erase_user(self, e: Erasure) -> list[str]:
        """Their messages and the restrictions on them go; restrictions they imposed, messages
        they deleted as a moderator and lives they hosted are anonymized. Returns the lives
        whose cached chat state names them."""
        uid, ps = e.user_id, e.pseudonym
        lives = [
            r["live_id"]
            for r in await e.conn.fetch(
                "SELECT live_id FROM live_chat_restrictions WHERE user_id = $1 OR by_user = $1"
                " UNION SELECT id FROM lives WHERE host_id = $1",
                uid,
            )
        ]
        await e.execute(
            "live_chat_messages", "DELETE FROM live_chat_messages WHERE user_id = $1", uid
        )
        await e.execute(
            "live_chat_restrictions", "DELETE FROM live_chat_restrictions WHERE user_id = $1", uid
        )
        await e.execute(
            "live_chat_messages (deleted by)",
            "UPDATE live_chat_messages SET deleted_by = $2 WHERE deleted_by = $1",
            uid,
            ps,
        )
        await e.execute(
            "live_chat_restrictions (imposed)",
            "UPDATE live_chat_restrictions SET by_user = privacy_erase_ident(by_user, $1, $2),"
            " reason = privacy_erase_text(reason, $1, $2)"
            " WHERE by_user = $1 OR reason IS DISTINCT FROM privacy_erase_text(reason, $1, $2)",
            uid,
            ps,
        )
        await e.execute(
            "lives (hosted)", "UPDATE lives SET host_id = $2 WHERE host_id = $1", uid, ps
        )
        return lives
