"""The one notion of "now": `utcnow()` for code that only needs the time, and a `Clock` where a
feature's decisions must be testable without sleeping (the 8 AM brief, quiet hours, retention):
the system clock in production, a settable `ManualClock` in tests."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that only moves when told to (tests, replays)."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._at = at.astimezone(UTC)

    def advance(self, seconds: float = 0, **delta: float) -> None:
        self._at += timedelta(seconds=seconds, **delta)


@cache
def zone_names() -> list[str]:
    """Every IANA time zone this machine knows (what `ZoneInfo` accepts), sorted."""
    return sorted(zoneinfo.available_timezones() - {"Factory", "localtime"})


def zone_schema(schema: dict[str, Any]) -> None:
    """JSON Schema of a time-zone field: one of `zone_names()` (documents what is accepted)."""
    schema["enum"] = zone_names()
