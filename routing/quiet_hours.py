"""Quiet hours and local-time schedules in the user's IANA time zone.

A window like 23:00-08:00 crosses midnight; 13:00-14:00 does not; start == end means none.
Times are wall-clock times in the user's zone, so a window keeps its local hours across DST.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from routing.preferences import WEEKDAYS, Preferences, parse_hhmm


def quiet_until(prefs: Preferences, now: datetime) -> datetime | None:
    """When the quiet window that contains `now` ends (UTC), or None when not quiet."""
    q = prefs.quiet_hours
    if not q.enabled or q.start == q.end:
        return None
    tz = ZoneInfo(prefs.timezone)
    local = now.astimezone(tz)
    start, end = parse_hhmm(q.start), parse_hhmm(q.end)
    t = local.time().replace(tzinfo=None)
    if start < end:
        quiet = start <= t < end
        end_day = local.date()
    else:  # crosses midnight
        quiet = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not quiet:
        return None
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(UTC)


def next_digest_at(prefs: Preferences, now: datetime, mode: str) -> datetime:
    """The next digest time after `now`: daily at digest_time, weekly on digest_day too."""
    tz = ZoneInfo(prefs.timezone)
    local = now.astimezone(tz)
    at = parse_hhmm(prefs.digest_time)
    day = local.date()
    for _ in range(8):
        candidate = datetime.combine(day, at, tzinfo=tz)
        if candidate > local and (
            mode == "daily" or WEEKDAYS[candidate.weekday()] == prefs.digest_day
        ):
            return candidate.astimezone(UTC)
        day += timedelta(days=1)
    raise AssertionError("a weekday repeats within 8 days")
