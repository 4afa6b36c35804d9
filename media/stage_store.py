"""SQL of audio rooms and their stages. Every stage change runs inside `locked(room_id)`: one
transaction holding the room row (SELECT ... FOR UPDATE), so concurrent changes from any
process apply one after another and the room's version grows by one per change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from server.personal_data import Erasure, records
from server.storage import Store


@dataclass(slots=True)
class Room:
    id: str
    host_id: str
    title: str
    state: str
    scheduled_for: datetime | None
    version: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(slots=True)
class Member:
    user_id: str
    role: str
    present: bool = False
    hand_seq: int | None = None
    invited: bool = False
    muted: bool = False
    removed: bool = False
    stage_seq: int | None = None
    lk_event_at: int = 0


_MEMBER_FIELDS = frozenset(
    {"role", "present", "hand_seq", "invited", "muted", "removed", "stage_seq", "lk_event_at"}
)
_ROOM_FIELDS = frozenset({"state", "started_at", "ended_at"})


def _room(row: asyncpg.Record) -> Room:
    return Room(**{k: row[k] for k in Room.__slots__})


def _member(row: asyncpg.Record) -> Member:
    return Member(
        user_id=row["user_id"],
        role=row["role"],
        present=row["present"],
        hand_seq=row["hand_seq"],
        invited=row["invited"],
        muted=row["muted"],
        removed=row["removed"],
        stage_seq=row["stage_seq"],
        lk_event_at=row["lk_event_at"],
    )


class StageTx:
    """One locked room inside a transaction; `changed` marks that the version must grow."""

    def __init__(self, conn: asyncpg.Connection, room: Room) -> None:
        self.conn = conn
        self.room = room
        self.changed = False

    async def member(self, user_id: str) -> Member | None:
        row = await self.conn.fetchrow(
            "SELECT * FROM audio_members WHERE room_id = $1 AND user_id = $2",
            self.room.id,
            user_id,
        )
        return _member(row) if row else None

    async def members(self) -> list[Member]:
        return await _members(self.conn, self.room.id)

    async def add_member(self, user_id: str, role: str, *, present: bool) -> Member:
        seq = await self.next_seq() if role != "listener" else None
        await self.conn.execute(
            "INSERT INTO audio_members (room_id, user_id, role, present, stage_seq)"
            " VALUES ($1, $2, $3, $4, $5)",
            self.room.id,
            user_id,
            role,
            present,
            seq,
        )
        self.changed = True
        return Member(user_id=user_id, role=role, present=present, stage_seq=seq)

    async def update_member(self, member: Member, **fields: Any) -> bool:
        """Write the fields that differ; return whether anything changed."""
        diff = {k: v for k, v in fields.items() if getattr(member, k) != v}
        if not diff:
            return False
        bad = set(diff) - _MEMBER_FIELDS
        if bad:
            raise ValueError(f"not member fields: {sorted(bad)}")
        cols = list(diff)
        sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols))
        await self.conn.execute(
            f"UPDATE audio_members SET {sets} WHERE room_id = $1 AND user_id = $2",
            self.room.id,
            member.user_id,
            *diff.values(),
        )
        for k, v in diff.items():
            setattr(member, k, v)
        # lk_event_at alone is bookkeeping, not a stage change
        if set(diff) - {"lk_event_at"}:
            self.changed = True
        return True

    async def on_stage(self) -> int:
        """Host, moderators and speakers: everyone who publishes audio."""
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM audio_members WHERE room_id = $1 AND role <> 'listener'",
                self.room.id,
            )
        )

    async def next_seq(self) -> int:
        return int(await self.conn.fetchval("SELECT nextval('audio_queue_seq')"))

    async def update_room(self, **fields: Any) -> None:
        bad = set(fields) - _ROOM_FIELDS
        if bad:
            raise ValueError(f"not room fields: {sorted(bad)}")
        cols = list(fields)
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        await self.conn.execute(
            f"UPDATE audio_rooms SET {sets} WHERE id = $1", self.room.id, *fields.values()
        )
        for k, v in fields.items():
            setattr(self.room, k, v)
        self.changed = True

    async def claim_receipt(self, provider: str, receipt_id: str) -> bool:
        """Record a webhook delivery in this transaction; False when it was seen before."""
        return await claim_receipt(self.conn, provider, receipt_id)

    async def bump(self) -> int:
        self.room.version = int(
            await self.conn.fetchval(
                "UPDATE audio_rooms SET version = version + 1 WHERE id = $1 RETURNING version",
                self.room.id,
            )
        )
        return self.room.version


class StageStore(Store):
    # -- a user's data ------------------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        db = self.storage.db
        return {
            "rooms_hosted": records(
                await db.fetch("SELECT * FROM audio_rooms WHERE host_id = $1", user_id)
            ),
            "memberships": records(
                await db.fetch("SELECT * FROM audio_members WHERE user_id = $1", user_id)
            ),
        }

    async def erase_user(self, e: Erasure) -> tuple[list[str], list[str]]:
        """Rooms they host and their memberships go. Returns (live rooms they hosted, other
        live rooms they were present in), for the steps after the commit (LiveKit, sockets)."""
        hosted = [
            r["id"]
            for r in await e.conn.fetch(
                "SELECT id FROM audio_rooms WHERE host_id = $1 AND state = 'live'", e.user_id
            )
        ]
        seats = [
            r["room_id"]
            for r in await e.conn.fetch(
                "SELECT m.room_id FROM audio_members m JOIN audio_rooms r ON r.id = m.room_id"
                " WHERE m.user_id = $1 AND m.present AND r.state = 'live' AND r.host_id <> $1",
                e.user_id,
            )
        ]
        await e.execute("audio_rooms", "DELETE FROM audio_rooms WHERE host_id = $1", e.user_id)
        await e.execute("audio_members", "DELETE FROM audio_members WHERE user_id = $1", e.user_id)
        return hosted, seats

    async def create_room(
        self,
        room_id: str,
        host_id: str,
        title: str,
        *,
        state: str,
        scheduled_for: datetime | None,
    ) -> Room:
        async with self.storage.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO audio_rooms (id, host_id, title, state, scheduled_for, started_at)"
                " VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'live' THEN now() END)"
                " RETURNING *",
                room_id,
                host_id,
                title,
                state,
                scheduled_for,
            )
            await conn.execute(
                "INSERT INTO audio_members (room_id, user_id, role, stage_seq)"
                " VALUES ($1, $2, 'host', nextval('audio_queue_seq'))",
                room_id,
                host_id,
            )
        return _room(row)

    async def delete_room(self, room_id: str) -> None:
        await self.storage.db.execute("DELETE FROM audio_rooms WHERE id = $1", room_id)

    async def room(self, room_id: str) -> Room | None:
        row = await self.storage.db.fetchrow("SELECT * FROM audio_rooms WHERE id = $1", room_id)
        return _room(row) if row else None

    async def snapshot(self, room_id: str) -> tuple[Room, list[Member]] | None:
        async with self.storage.db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            row = await conn.fetchrow("SELECT * FROM audio_rooms WHERE id = $1", room_id)
            if row is None:
                return None
            return _room(row), await _members(conn, room_id)

    @asynccontextmanager
    async def locked(self, room_id: str) -> AsyncIterator[StageTx | None]:
        """Yield the room locked for update (None when there is no such room); commit on exit,
        roll back when the block raises."""
        async with self.storage.db.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM audio_rooms WHERE id = $1 FOR UPDATE", room_id)
            yield StageTx(conn, _room(row)) if row else None

    async def claim_receipt(self, provider: str, receipt_id: str) -> bool:
        return await claim_receipt(self.storage.db, provider, receipt_id)

    async def prune_receipts(self, older_than_days: int) -> int:
        """Forget webhook receipts older than any delivery a provider could still retry."""
        status = await self.storage.db.execute(
            "DELETE FROM webhook_receipts WHERE received_at < now() - make_interval(days => $1)",
            older_than_days,
        )
        return int(status.split()[-1])


async def _members(conn: Any, room_id: str) -> list[Member]:
    rows = await conn.fetch(
        "SELECT * FROM audio_members WHERE room_id = $1 ORDER BY stage_seq NULLS LAST, user_id",
        room_id,
    )
    return [_member(r) for r in rows]


async def claim_receipt(conn: Any, provider: str, receipt_id: str) -> bool:
    """Insert a webhook receipt; False when this delivery was already handled."""
    status = await conn.execute(
        "INSERT INTO webhook_receipts (provider, receipt_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        provider,
        receipt_id[:200],
    )
    return bool(status.endswith(" 1"))
