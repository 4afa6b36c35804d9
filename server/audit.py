"""The audit log: every admin and moderator action, append-only (a trigger refuses updates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from server.auth import Principal
from server.personal_data import Erasure
from server.storage import Storage


class AuditLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def record(
        self,
        actor: Principal | str,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        conn: Any = None,
    ) -> None:
        actor_id, role = (
            (actor.user_id, actor.role.value) if isinstance(actor, Principal) else (actor, "system")
        )
        await (conn or self.storage.db).execute(
            "INSERT INTO audit_log (actor_id, actor_role, action, target, reason, details)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            actor_id,
            role,
            action,
            target,
            reason,
            details or {},
        )

    async def query(
        self,
        *,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        rows = await self.storage.db.fetch(
            "SELECT * FROM audit_log WHERE ($1::text IS NULL OR actor_id = $1)"
            " AND ($2::text IS NULL OR target = $2) AND ($3::text IS NULL OR action = $3)"
            " AND ($4::timestamptz IS NULL OR at >= $4) AND ($5::bigint IS NULL OR id < $5)"
            " ORDER BY id DESC LIMIT $6",
            actor,
            target,
            action,
            since,
            before_id,
            limit,
        )
        return [{**dict(r), "at": r["at"].isoformat()} for r in rows]

    async def export_user(self, user_id: str) -> list[Any]:
        """Every entry the user did or that names them."""
        return list(
            await self.storage.db.fetch(
                "SELECT * FROM audit_log WHERE actor_id = $1 OR target = 'user:' || $1 ORDER BY id",
                user_id,
            )
        )

    async def erase_user(self, e: Erasure) -> None:
        """The user id becomes the pseudonym in every entry (migration 0009's
        `audit_log_erase_subject`: the log stays append-only except for this substitution)."""
        n = await e.conn.fetchval("SELECT audit_log_erase_subject($1, $2)", e.user_id, e.pseudonym)
        e.add("audit_log", int(n))
