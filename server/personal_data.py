"""A user's data, the shapes every feature (and the core) shares for it: the export's JSON
form of database rows (`plain`, `records`), and one erasure pass of one user (`Erasure`), which
each is handed to remove or anonymize its rows inside one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def plain(value: Any) -> Any:
    """A database value as JSON: times ISO 8601, ids and amounts as strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def records(rows: Any, *, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Database rows as JSON objects, without the `drop` columns (secrets)."""
    return [{k: plain(v) for k, v in dict(r).items() if k not in drop} for r in rows]


def rows_touched(status: str) -> int:
    """Rows touched, from an asyncpg status string ("DELETE 3", "UPDATE 0", "INSERT 0 1")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


@dataclass
class Erasure:
    """One erasure pass of one user, handed to every feature in turn.

    `conn` is in the erasure's transaction: a feature removes its rows of the user, or
    anonymizes them (the user id replaced by `pseudonym`, where the rows belong to others too),
    and counts what it touched with `add`. SQL helpers of migration 0009 do the matching:
    identifier columns exactly (`privacy_erase_ident(s)`), prose by whole word
    (`privacy_erase_text`), JSON by key (`privacy_erase_json`). UPDATEs touch only rows whose
    value really changes, so the counts are exact and a second pass (the sweeps) finds nothing.

    What lives outside PostgreSQL (Redis keys, caches, provider state) is done after the commit:
    `after(step)`; a step returns how many Redis keys it removed.
    """

    conn: Any
    user_id: str
    pseudonym: str
    rows: dict[str, int] = field(default_factory=dict)
    steps: list[Callable[[], Awaitable[int]]] = field(default_factory=list)

    def add(self, label: str, n: int) -> None:
        if n:
            self.rows[label] = self.rows.get(label, 0) + n

    async def execute(self, label: str, sql: str, *args: Any) -> int:
        """Run one statement in the transaction; count the rows it touched under `label`."""
        n = rows_touched(await self.conn.execute(sql, *args))
        self.add(label, n)
        return n

    def after(self, step: Callable[[], Awaitable[int]]) -> None:
        self.steps.append(step)
