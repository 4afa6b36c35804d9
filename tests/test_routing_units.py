"""Pure parts of the router: the priority table, recipients, quiet hours, digest times, texts,
retry delays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from routing import render
from routing.dispatch import RetryPolicy
from routing.preferences import Preferences, PreferencesUpdate, QuietHours, apply_update
from routing.priorities import EVENTS, KINDS, Priority, actor_of, recipients_of
from routing.quiet_hours import next_digest_at, quiet_until
from server.events import EVENT_TYPES


def test_priority_table_follows_seed_004() -> None:
    expect = {
        Priority.IMMEDIATE: {"tip", "sale", "live"},
        Priority.STANDARD: {"like", "comment", "follow", "mention", "match"},
        Priority.BATCH: {"digest", "milestone", "announcement"},
        Priority.SILENT: {"view"},
    }
    for priority, kinds in expect.items():
        for kind in kinds:
            assert KINDS[kind].priority is priority, kind
    assert KINDS["match"].daily_cap == 3 and KINDS["match"].default_on is False
    assert set(EVENTS) <= set(EVENT_TYPES)
    assert {rule.kind for rule in EVENTS.values()} <= set(KINDS)


def test_recipients_come_from_subjects_and_fields_never_the_actor() -> None:
    rule = EVENTS["message.sent"]
    payload = {
        "conversation_id": "k",
        "message_id": "m",
        "sender_id": "bo",
        "recipients": ["ana", "bo", "cy"],
    }
    actor = actor_of(rule, payload, None)
    assert actor == "bo"
    assert recipients_of(rule, payload, ["user:di", "zone:x", "user:bo"], actor) == [
        "di",
        "ana",
        "cy",
    ]
    tip = EVENTS["hours.tipped"]
    assert recipients_of(tip, {"from_user": "a", "to_user": "a"}, [], "a") == []  # self-tip


@pytest.mark.parametrize(
    ("local", "quiet_until_local"),
    [
        ("2030-03-04T22:59", None),
        ("2030-03-04T23:00", "2030-03-05T08:00"),
        ("2030-03-05T03:00", "2030-03-05T08:00"),
        ("2030-03-05T07:59", "2030-03-05T08:00"),
        ("2030-03-05T08:00", None),
        # the night DST starts in Berlin (2030-03-31 02:00 -> 03:00)
        ("2030-03-30T23:30", "2030-03-31T08:00"),
    ],
)
def test_quiet_hours_cross_midnight_in_the_users_zone(
    local: str, quiet_until_local: str | None
) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")
    prefs = Preferences(timezone="Europe/Berlin")
    now = datetime.fromisoformat(local).replace(tzinfo=tz)
    got = quiet_until(prefs, now)
    if quiet_until_local is None:
        assert got is None
    else:
        assert got == datetime.fromisoformat(quiet_until_local).replace(tzinfo=tz)


def test_quiet_hours_within_a_day_and_switched_off() -> None:
    prefs = Preferences(quiet_hours=QuietHours(start="13:00", end="14:00"))
    assert quiet_until(prefs, datetime(2030, 3, 4, 13, 30, tzinfo=UTC)) == datetime(
        2030, 3, 4, 14, 0, tzinfo=UTC
    )
    assert quiet_until(prefs, datetime(2030, 3, 4, 12, 59, tzinfo=UTC)) is None
    off = Preferences(quiet_hours=QuietHours(enabled=False))
    assert quiet_until(off, datetime(2030, 3, 4, 23, 30, tzinfo=UTC)) is None


def test_next_digest_daily_and_weekly_local_time() -> None:
    prefs = Preferences(timezone="America/New_York")  # weekly, Sunday 09:00
    monday = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)  # 07:00 in New York
    assert next_digest_at(prefs, monday, "weekly") == datetime(2030, 3, 10, 13, 0, tzinfo=UTC)
    assert next_digest_at(prefs, monday, "daily") == datetime(2030, 3, 4, 14, 0, tzinfo=UTC)


def test_updates_merge_and_changing_the_phone_clears_verification() -> None:
    prefs = Preferences(phone="+4915112345678", phone_verified=True, types={"like": False})
    upd = PreferencesUpdate.model_validate({"types": {"follow": False}, "phone": "+4915199999999"})
    out = apply_update(prefs, upd)
    assert out.types == {"like": False, "follow": False}
    assert out.phone_verified is False
    same = apply_update(prefs, PreferencesUpdate.model_validate({"phone": "+4915112345678"}))
    assert same.phone_verified is True
    assert apply_update(prefs, PreferencesUpdate.model_validate({"email": ""})).email is None


def test_texts_and_aggregated_wording() -> None:
    assert render.who(["ana"], 1) == "ana"
    assert render.who(["ana", "bo"], 2) == "ana and bo"
    assert render.who(["ana", "bo"], 13) == "ana and 12 others"
    assert render.texts("follow", {}, ["ana", "bo"], 13) == (
        "New followers",
        "ana and 12 others followed you",
    )
    parts = render.email([{"title": "<b>", "body": "x & y"}], heading="New on OURS")
    assert "&lt;b&gt;" in parts["html"] and "x &amp; y" in parts["html"]
    assert "x & y" in parts["text"]


def test_retry_delay_doubles_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, base=2.0, cap=60.0)
    for attempt, (lo, hi) in enumerate([(1, 3), (2, 6), (4, 12), (8, 24)], start=1):
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert lo <= min(delays) and max(delays) <= hi
        assert max(delays) - min(delays) > 0  # jittered
    assert all(30 <= policy.delay(1, 30) <= 33 for _ in range(200))
    assert all(policy.delay(20, None) <= 90 for _ in range(200))  # capped (+50% jitter)
