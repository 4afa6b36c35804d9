"""Bulk statements: many rows sent as one array per column, which the SQL unnests
(`unnest($1::text[], $2::bigint[], ...)`), so a fan-out to thousands costs one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def columns(rows: Sequence[object], names: str) -> list[list[Any]]:
    """One list per attribute of `rows`, `names` space-separated and in the statement's order."""
    return [[getattr(row, name) for row in rows] for name in names.split()]
