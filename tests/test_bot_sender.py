"""The shared Telegram sender against the fake Bot API, with its real limits (30 messages/s
overall, 1/s per chat), on both limiter backends (in-process; Redis)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from app import compose
from bots.feature import BotFeature
from bots.links import chat_id_for
from bots.sender import Priority, TelegramDisabled
from config import Settings
from server.auth import Principal, Role
from tests.fakes.telegram import TOKEN, FakeTelegram


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def bot(settings: Settings, telegram: FakeTelegram) -> AsyncIterator[BotFeature]:
    settings.telegram_bot_token = TOKEN
    settings.telegram_api_base = telegram.url
    composed = compose(settings)
    await composed.node.start(consume=False)
    yield composed.features.bot
    await composed.node.stop()


async def test_200_alerts_to_50_chats_stay_within_telegram_limits(
    bot: BotFeature, telegram: FakeTelegram
) -> None:
    chats = [10_000 + i for i in range(50)]
    results = await asyncio.gather(
        *(bot.sender.send(chats[i % 50], f"alert {i}", priority=Priority.ALERT) for i in range(200))
    )
    assert [r.status for r in results] == ["sent"] * 200
    calls = telegram.messages()
    assert len(calls) == 200
    assert {c.status for c in calls} == {200}  # the fake never had to say 429
    assert FakeTelegram.max_in_window([c.t for c in calls], 1.0) <= 30
    for n, chat in enumerate(chats):
        mine = telegram.messages(chat)
        assert [c.text for c in mine] == [f"alert {n + 50 * k}" for k in range(4)]  # in order
        gaps = [b.t - a.t for a, b in itertools.pairwise(mine)]
        assert min(gaps) >= 1.0, gaps


async def test_alerts_go_before_briefs_queued_earlier(
    bot: BotFeature, telegram: FakeTelegram
) -> None:
    briefs = [
        asyncio.create_task(bot.sender.send(20_000 + i, f"brief {i}", priority=Priority.BRIEF))
        for i in range(40)
    ]
    alerts = [
        asyncio.create_task(bot.sender.send(30_000 + i, f"alert {i}", priority=Priority.ALERT))
        for i in range(5)
    ]
    results = await asyncio.gather(*briefs, *alerts)
    assert all(r.ok for r in results)
    calls = sorted(telegram.messages(), key=lambda c: c.t)
    # the first 30 slots were taken before any 31st could go; all 5 alerts got one of them,
    # although 40 briefs were queued before them (first come, first served would send the
    # alerts a second later, in the second window)
    cutoff = calls[30].t
    alert_times = [c.t for c in calls if c.text and c.text.startswith("alert")]
    assert len(alert_times) == 5 and max(alert_times) < cutoff


async def test_429_is_retried_after_its_retry_after(
    bot: BotFeature, telegram: FakeTelegram
) -> None:
    telegram.flood(777, retry_after=2)
    result = await bot.sender.send(777, "hello after the flood")
    assert result.ok and result.attempts == 2
    first, second = telegram.messages(777)
    assert (first.status, second.status) == (429, 200)
    assert second.t - first.t >= 2.0  # retry_after (2 s), not just the 1 s chat interval


async def test_a_chat_that_blocked_the_bot_stops_receiving(
    bot: BotFeature, telegram: FakeTelegram
) -> None:
    code = await bot.links.new_code(Principal("u_gone", Role.USER))
    assert await bot.links.redeem(code.code, 555) is not None
    assert await chat_id_for(bot.node.storage, "u_gone") == 555
    telegram.block(555)
    first, queued = await asyncio.gather(bot.sender.send(555, "one"), bot.sender.send(555, "two"))
    assert (first.status, queued.status) == ("blocked", "blocked")
    assert await chat_id_for(bot.node.storage, "u_gone") is None
    assert await bot.store.is_blocked(555)
    later = await bot.sender.send(555, "three")
    assert later.status == "blocked"
    assert len(telegram.messages(555)) == 1  # only the first ever reached Telegram
    assert (await bot.sender.send(556, "others still get theirs")).ok


async def test_without_a_token_the_feature_is_idle(settings: Settings) -> None:
    composed = compose(settings)
    node = composed.node
    await node.start(consume=False)
    try:
        feature = composed.features.bot
        assert not feature.enabled and not feature.sender.enabled
        with pytest.raises(TelegramDisabled, match="OURS_TELEGRAM_BOT_TOKEN"):
            await feature.sender.send(1, "never sent")
        assert "bot-alerts" not in node.bus.consumers
        assert "bot.brief" not in node.scheduler.handlers
    finally:
        await node.stop()


async def test_two_processes_share_the_limits_through_redis(
    settings: Settings, telegram: FakeTelegram, backend: str
) -> None:
    if backend == "memory":
        pytest.skip("in the embedded default each process limits itself; Redis shares them")
    settings.telegram_bot_token = TOKEN
    settings.telegram_api_base = telegram.url
    processes = [compose(settings), compose(settings)]  # two servers with one bot token
    nodes = [p.node for p in processes]
    for node in nodes:
        await node.start(consume=False)
    try:
        senders = [p.features.bot.sender for p in processes]
        chats = [40_000 + i for i in range(20)]
        results = await asyncio.gather(
            *(s.send(chat, f"{i} to {chat}") for i, s in enumerate(senders) for chat in chats),
            *(s.send(chat, f"{i} again") for i, s in enumerate(senders) for chat in chats),
        )
        assert all(r.ok for r in results)
        calls = telegram.messages()
        assert len(calls) == 80 and {c.status for c in calls} == {200}
        assert FakeTelegram.max_in_window([c.t for c in calls], 1.0) <= 30
        for chat in chats:
            mine = telegram.messages(chat)
            assert len(mine) == 4
            assert min(b.t - a.t for a, b in itertools.pairwise(mine)) >= 1.0
    finally:
        for node in nodes:
            await node.stop()
