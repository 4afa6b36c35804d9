"""The 8 AM daily brief: durable scheduler jobs at 08:00 in the admin's zone, sent once across
restarts, caught up after downtime, in seed 004's format.

"Now" is the bot's clock (ManualClock), set to dates in February 2026. The scheduler decides
what is due by the database's clock, for which these dates are long past, so the tests make
the scheduler's passes themselves (`run_due`) at the moments they mean, instead of running its
loop (nodes start with consume=False) — the same claim-and-run code the loop calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiogram.types import Update

from app import compose
from bots.brief import job_key, next_date, run_at
from bots.reports import fmt_money, next_milestone
from config import Settings
from server.auth import Principal, Role
from server.clock import ManualClock
from server.events import Event, build_event
from tests.fakes.telegram import TOKEN, FakeTelegram, message_update

BERLIN = ZoneInfo("Europe/Berlin")
D = date(2026, 2, 12)  # CET (UTC+1): 08:00 Berlin is 07:00 UTC


def berlin(d: date, h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, s, tzinfo=BERLIN)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def bot_settings(settings: Settings, telegram: FakeTelegram) -> Settings:
    settings.telegram_bot_token = TOKEN
    settings.telegram_api_base = telegram.url
    return settings


class Process:
    """One run of the server process, with the bot's clock at a chosen time."""

    def __init__(self, settings: Settings, at: datetime) -> None:
        composed = compose(settings)
        self.node = composed.node
        f = composed.features.bot
        self.bot = f
        self.clock = ManualClock(at)
        f.clock = self.clock

    async def __aenter__(self) -> Process:
        await self.node.start(consume=False)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.node.stop()

    async def link_admin(self, user: str, chat_id: int, tz: str = "Europe/Berlin") -> None:
        code = await self.bot.links.new_code(Principal(user, Role.ADMIN), tz)
        assert self.bot.bot is not None
        raw = message_update(chat_id, f"/start {code.code}")
        await self.bot.dp.feed_update(self.bot.bot, Update.model_validate(raw))

    async def log(self, at: datetime, type_: str, **payload: Any) -> None:
        """An event in the log at `at` (as the eventlog and bot-stats consumers record it)."""
        event = build_event({"type": type_, "payload": payload})
        event = Event(**{**event.wire(), "ts": at.astimezone(UTC).isoformat()})
        await self.node.events.append(event)
        await self.bot.count_users(event)

    async def brief_jobs(self, user: str) -> list[dict[str, Any]]:
        rows = await self.node.storage.db.fetch(
            "SELECT key, run_at, state FROM jobs WHERE kind = 'bot.brief' AND key LIKE $1"
            " ORDER BY run_at",
            f"bot.brief:{user}:%",
        )
        return [dict(r) for r in rows]


def briefs(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [
        c.text
        for c in telegram.delivered(chat_id)
        if c.text and c.text.startswith("📊 OURS Daily Brief")
    ]


async def test_brief_at_8_berlin_goes_out_once_also_after_a_restart_at_075959(
    bot_settings: Settings, telegram: FakeTelegram
) -> None:
    async with Process(bot_settings, berlin(D, 7, 0)) as p:
        await p.link_admin("boss", 4242)
        jobs = await p.brief_jobs("boss")
        assert [(j["key"], j["run_at"], j["state"]) for j in jobs] == [
            (job_key("boss", D), datetime(2026, 2, 12, 7, 0, tzinfo=UTC), "pending")
        ]
        # the day's activity (the 24 hours before the brief)
        p.clock.set(berlin(D, 7, 30))
        at = berlin(D, 7, 30)
        await p.log(
            at - timedelta(days=3),
            "content.created",
            content_id="old",
            kind="post",
            creator_id="u_old",
        )
        await p.log(
            at,
            "content.created",
            content_id="c_1",
            kind="video",
            creator_id="u_7",
            title="I quit my 6-figure job",
        )
        await p.log(at, "content.created", content_id="c_2", kind="post", creator_id="u_8")
        await p.log(at, "content.created", content_id="c_3", kind="post", creator_id="u_8")
        await p.log(at, "content.liked", content_id="c_1", user_id="u_2")
        await p.log(at, "content.shared", content_id="c_1", user_id="u_3")
        await p.log(at, "content.liked", content_id="c_2", user_id="u_3")
        await p.log(at, "hours.earned", user_id="u_8", amount=124.5)
        await p.log(at, "hours.tipped", from_user="u_2", to_user="u_7", amount=20)
        await p.log(at, "hours.spent", user_id="u_3", amount=2.25)
        await p.log(
            berlin(D, 1),
            "storefront.purchased",
            order_id="o_1",
            buyer_id="u_2",
            seller_id="u_7",
            product_id="p_1",
            amount_cents=34200,
        )
        await p.log(
            berlin(D, 1, 0) - timedelta(days=5),
            "storefront.purchased",
            order_id="o_0",
            buyer_id="u_2",
            seller_id="u_7",
            product_id="p_1",
            amount_cents=855800,
        )
        await p.log(
            berlin(D, 1, 0) - timedelta(days=20),
            "storefront.purchased",
            order_id="o_jan",
            buyer_id="u_2",
            seller_id="u_7",
            product_id="p_1",
            amount_cents=100,
        )
        p.clock.set(berlin(D, 7, 59, 59))

    assert briefs(telegram, 4242) == []
    # the process restarts at 07:59:59: still one job, still nothing sent
    async with Process(bot_settings, berlin(D, 7, 59, 59)) as p:
        jobs = await p.brief_jobs("boss")
        assert [(j["key"], j["state"]) for j in jobs] == [(job_key("boss", D), "pending")]
        assert briefs(telegram, 4242) == []
        # 08:00:00 — the scheduler's pass runs the job
        p.clock.set(berlin(D, 8, 0, 0))
        assert await p.node.scheduler.run_due() >= 1  # other features have jobs too
        sent = briefs(telegram, 4242)
        assert len(sent) == 1
        assert sent[0].splitlines() == [
            "📊 OURS Daily Brief — Feb 12, 2026",
            "",
            "👥 Users: 5 (+2 today)",
            "📝 Content: 2 new posts, 1 video, 0 articles",
            "⏣ HOURS: 124.5 earned, 20 tipped, 2.25 spent",
            "💰 Revenue: $342 today ($8,900 this month)",
            '🔥 Trending: "I quit my 6-figure job" by @u_7 (2 interactions)',
            "🚀 Top Earner: @u_8 (124.5 HRS today)",
            "⚠️ Issues: None",
            "",
            "Next milestone: 10 users (5 to go)",
        ]
        # the next one is waiting for tomorrow 08:00 Berlin
        jobs = await p.brief_jobs("boss")
        assert [(j["key"], j["run_at"], j["state"]) for j in jobs] == [
            (job_key("boss", D), datetime(2026, 2, 12, 7, 0, tzinfo=UTC), "done"),
            (
                job_key("boss", D + timedelta(days=1)),
                datetime(2026, 2, 13, 7, 0, tzinfo=UTC),
                "pending",
            ),
        ]

    # another restart just after 08:00 sends nothing again, even if the job ran once more
    async with Process(bot_settings, berlin(D, 8, 0, 30)) as p:
        assert len(await p.brief_jobs("boss")) == 2
        await p.bot.briefs.run_job({"user_id": "boss", "date": D.isoformat()})
        assert len(briefs(telegram, 4242)) == 1
        # and the next morning's goes out at its 08:00
        p.clock.set(berlin(D + timedelta(days=1), 8, 0, 0))
        assert await p.node.scheduler.run_due() >= 1  # other features have jobs too
        sent = briefs(telegram, 4242)
        assert len(sent) == 2 and sent[1].startswith("📊 OURS Daily Brief — Feb 13, 2026")


async def test_a_brief_missed_while_the_server_was_down_is_caught_up_once(
    bot_settings: Settings, telegram: FakeTelegram
) -> None:
    async with Process(bot_settings, berlin(D - timedelta(days=1), 20, 0)) as p:
        await p.link_admin("boss", 4343)
    # down over 08:00; back at 09:30: the pending job is due and runs
    async with Process(bot_settings, berlin(D, 9, 30)) as p:
        assert await p.node.scheduler.run_due() >= 1  # other features have jobs too
        assert [b.splitlines()[0] for b in briefs(telegram, 4343)] == [
            "📊 OURS Daily Brief — Feb 12, 2026"
        ]


async def test_after_days_down_only_todays_brief_is_caught_up(
    bot_settings: Settings, telegram: FakeTelegram
) -> None:
    async with Process(bot_settings, berlin(D - timedelta(days=3), 7, 0)) as p:
        await p.link_admin("boss", 4444)  # next brief: 3 days ago at 08:00 (never ran)
    async with Process(bot_settings, berlin(D, 10, 0)) as p:
        keys = [j["key"] for j in await p.brief_jobs("boss")]
        assert keys == [job_key("boss", D - timedelta(days=3)), job_key("boss", D)]
        assert await p.node.scheduler.run_due() == 2  # the stale one is skipped
        assert [b.splitlines()[0] for b in briefs(telegram, 4444)] == [
            "📊 OURS Daily Brief — Feb 12, 2026"
        ]


async def test_admins_get_their_brief_at_8_in_their_own_zone(
    bot_settings: Settings, telegram: FakeTelegram
) -> None:
    summer = date(2026, 7, 1)
    now = datetime(2026, 7, 1, 3, 0, tzinfo=UTC)
    async with Process(bot_settings, now) as p:
        await p.link_admin("ny", 5001, "America/New_York")  # 03:00Z = 23:00 the day before
        await p.link_admin("tokyo", 5002, "Asia/Tokyo")  # 03:00Z = 12:00, past 08:00
        await p.link_admin("berlin", 5003, "Europe/Berlin")  # 03:00Z = 05:00 CEST
        ny = (await p.brief_jobs("ny"))[0]
        assert ny["run_at"] == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 08:00 EDT
        tokyo = (await p.brief_jobs("tokyo"))[0]
        assert tokyo["key"] == job_key("tokyo", summer + timedelta(days=1))
        assert tokyo["run_at"] == datetime(2026, 7, 1, 23, 0, tzinfo=UTC)  # 08:00 JST
        berlin_job = (await p.brief_jobs("berlin"))[0]
        assert berlin_job["run_at"] == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)  # 08:00 CEST


def test_brief_times_and_formats() -> None:
    assert run_at("Europe/Berlin", D) == datetime(2026, 2, 12, 7, 0, tzinfo=UTC)
    assert run_at("Europe/Berlin", date(2026, 3, 29)) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    assert next_date("Europe/Berlin", berlin(D, 7, 59, 59)) == D
    assert next_date("Europe/Berlin", berlin(D, 8, 0, 0)) == D + timedelta(days=1)
    assert next_milestone(1234) == 1500 and next_milestone(0) == 10
    assert next_milestone(1500) == 2000 and next_milestone(9_999) == 10_000
    assert fmt_money(34200) == "$342" and fmt_money(890000) == "$8,900"
    assert fmt_money(1999) == "$19.99" and fmt_money(500, "EUR") == "5 EUR"
