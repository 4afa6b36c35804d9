"""The bot end to end on a running server (both bus backends): link a chat over HTTP + /start,
then every command answers from events published in the test; non-admins are refused; bad
arguments get a usage line; alerts follow the rules; the webhook checks its secret.

Updates go through the aiogram dispatcher (`dp.feed_update`) or the webhook route; replies
come back through the shared sender to the fake Bot API, where the tests read them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiogram.types import Update

from bots.alerts import DEFAULT_RULES, EventRule, load_rules
from bots.brief import job_key, next_date, run_at
from bots.feature import BotFeature
from config import Settings
from server import metrics
from server.clock import ManualClock
from server.events import build_event
from tests.conftest import free_port
from tests.fakes.telegram import TOKEN, USERNAME, FakeTelegram, message_update
from tests.helpers import ServerHandle, connect, start_server

SECRET = "webhook-secret-0123456789"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def server(settings: Settings, telegram: FakeTelegram) -> AsyncIterator[ServerHandle]:
    settings.telegram_bot_token = TOKEN
    settings.telegram_api_base = telegram.url
    settings.telegram_mode = "webhook"
    settings.telegram_webhook_secret = SECRET
    handle = await start_server(settings, free_port())
    # the 1 s per-chat interval (shown at its real value in test_bot_sender) would only make
    # this file slow: one chat asks many commands here
    feature(handle).limiter.chat_interval = 0.02
    telegram.enforce_limits = False
    yield handle
    await handle.stop()


def feature(server: ServerHandle) -> BotFeature:
    return server.features.bot


class Chat:
    """One private Telegram chat with the bot."""

    def __init__(self, server: ServerHandle, telegram: FakeTelegram, chat_id: int) -> None:
        self.server = server
        self.telegram = telegram
        self.chat_id = chat_id

    async def say(self, text: str) -> str:
        """Feed a message to the dispatcher; return the bot's reply."""
        before = len(self.telegram.delivered(self.chat_id))
        f = feature(self.server)
        assert f.bot is not None
        update = Update.model_validate(message_update(self.chat_id, text), context={"bot": f.bot})
        await f.dp.feed_update(f.bot, update)
        calls = await self.telegram.wait_delivered(self.chat_id, before + 1)
        assert len(calls) == before + 1, [c.text for c in calls[before:]]
        return calls[-1].text or ""


async def http(
    server: ServerHandle, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.url + path, headers=headers, **kw) as r,
    ):
        return r.status, await r.json(content_type=None)


async def link(
    server: ServerHandle, telegram: FakeTelegram, user: str, role: str, chat_id: int, **body: Any
) -> tuple[Chat, str]:
    status, resp = await http(
        server, "POST", "/v1/me/telegram/link", server.token(user, role), json=body
    )
    assert status == 201, resp
    chat = Chat(server, telegram, chat_id)
    reply = await chat.say(f"/start {resp['data']['code']}")
    return chat, reply


async def publish(server: ServerHandle, type_: str, **payload: Any) -> None:
    status, body = await server.publish({"type": type_, "payload": payload})
    assert status == 202, body


async def settle(server: ServerHandle, events: int, timeout: float = 15) -> None:
    """Wait until `events` are in the event log, the bot's consumers and the router caught up,
    and every notification the router queued (a tip to a linked chat goes out by Telegram) was
    sent: a reply read after this is the reply to the command, not a late notification."""
    node = server.node
    deadline = time.monotonic() + timeout
    groups = ("eventlog", "bot-stats", "bot-alerts", "router")
    while True:
        logged = await node.events.count()
        lag = await node.bus.lag()
        if logged >= events and not any(lag.get(g, 0) for g in groups):
            break
        assert time.monotonic() < deadline, (logged, lag)
        await asyncio.sleep(0.05)
    await server.features.router.dispatcher.settle()


def lines(text: str) -> list[str]:
    return text.splitlines()


async def test_link_then_every_command_answers_from_the_event_log(
    server: ServerHandle, telegram: FakeTelegram
) -> None:
    admin, reply = await link(server, telegram, "boss", "admin", 4242, tz="Europe/Berlin")
    assert "Linked to @boss (admin)" in reply and "08:00 Europe/Berlin" in reply
    _, me = await http(server, "GET", "/v1/me/telegram", server.token("boss", "admin"))
    assert me["data"]["linked"] and me["data"]["chat_id"] == 4242
    assert me["data"]["tz"] == "Europe/Berlin" and me["data"]["role"] == "admin"
    # linking an admin scheduled the next 08:00 Berlin brief
    now = feature(server).clock.now()
    day = next_date("Europe/Berlin", now)
    job = await server.node.scheduler.get(job_key("boss", day))
    assert job is not None and job["run_at"] == run_at("Europe/Berlin", day)
    assert job["run_at"].astimezone(ZoneInfo("Europe/Berlin")).hour == 8

    # boss hears of tips at any hour: the default quiet hours (23:00-08:00 in the user's zone)
    # would hold the tip's Telegram message when this runs at night
    status, _ = await http(
        server,
        "PUT",
        "/v1/me/preferences",
        server.token("boss", "admin"),
        json={"quiet_hours": {"enabled": False}},
    )
    assert status == 200

    # the platform's events
    await publish(
        server,
        "content.created",
        content_id="c_1",
        kind="video",
        creator_id="u_7",
        title="Morning set",
    )
    await publish(
        server,
        "content.created",
        content_id="c_2",
        kind="post",
        creator_id="u_8",
        title="Quiet post",
    )
    await publish(
        server,
        "content.created",
        content_id="c_3",
        kind="article",
        creator_id="u_9",
        title="Deep dive",
    )
    for user in ("u_2", "u_3", "u_4"):
        await publish(server, "content.liked", content_id="c_1", user_id=user)
    await publish(server, "content.shared", content_id="c_1", user_id="u_2")
    await publish(server, "content.commented", content_id="c_2", user_id="u_3", comment_id="m_1")
    await publish(server, "content.commented", content_id="c_2", user_id="u_4", comment_id="m_2")
    await publish(server, "content.liked", content_id="c_3", user_id="u_2")
    await publish(
        server, "hours.tipped", from_user="u_2", to_user="u_7", amount=12.5, content_id="c_1"
    )
    await publish(server, "hours.earned", user_id="u_7", amount=100)
    await publish(server, "hours.earned", user_id="boss", amount=40)
    await publish(server, "hours.spent", user_id="boss", amount=5)
    await publish(server, "hours.tipped", from_user="boss", to_user="u_7", amount=3)
    await publish(server, "hours.tipped", from_user="u_2", to_user="boss", amount=7)
    await publish(
        server,
        "storefront.purchased",
        order_id="o_1",
        buyer_id="u_2",
        seller_id="u_7",
        product_id="p_1",
        amount_cents=1999,
    )
    await publish(
        server,
        "storefront.purchased",
        order_id="o_2",
        buyer_id="u_3",
        seller_id="u_8",
        product_id="p_2",
        amount_cents=1500,
    )
    await publish(
        server,
        "storefront.membership_new",
        member_id="u_4",
        creator_id="u_7",
        tier="gold",
        amount_cents=500,
    )
    await settle(server, 19)
    # the tip to boss reached the linked chat as a notification, before any command below
    assert [c.text for c in telegram.delivered(4242)][1:] == ["New tip\nu_2 tipped you 7.0 HRS"]
    # the HOURS ledger holds boss's balance
    ledger = server.features.ledger
    await ledger.service.grant("ops", "boss", Decimal("120"), "bot-test-grant")

    # another serving node's heartbeat counts too
    f = feature(server)
    await f.store.put_node_stats("node-b", {"/feed": 3, "/live": 0}, 2, 10, 0, f.clock.now())
    feed = await connect(server.url, "/feed", server.token("u_2"))
    live = await connect(server.url, "/live", server.token("u_3"))
    try:
        text = await admin.say("/status")
    finally:
        await feed.close()
        await live.close()
    assert lines(text)[0].startswith("🟢 OURS status — ") and "Europe/Berlin" in lines(text)[0]
    assert "🔌 Connections: 5 (" in text and "/feed 4" in text and "/live 1" in text
    assert "· 2 nodes" in text
    assert "👥 Active users: 4 connected now · 7 active in 24 h" in text
    lag = re.search(r"📨 Bus lag: (\d+) \((.*)\)", text)
    assert lag is not None, text
    per_group = dict(g.rsplit(" ", 1) for g in lag.group(2).split(", "))
    assert per_group["bot-alerts"] == "0" and per_group["bot-stats"] == "0"
    assert int(lag.group(1)) == sum(int(n) for n in per_group.values())
    assert "⚠️ Errors: 0.0%" in text
    assert "☠️ Dead letters: 0" in text
    assert "💰 Revenue today: $39.99 (2 purchases, 1 membership)" in text

    text = await admin.say("/hours")
    assert lines(text)[0] == "⏣ Your HOURS balance: 120 HRS"
    assert lines(text)[1] == "🏅 Tier: Silver"
    assert "earned 40 · tips received 7 · tips sent 3 · spent 5" in text

    text = await admin.say("/trending")
    ranked = [line for line in lines(text) if re.match(r"^\d\. ", line)]
    assert len(ranked) == 3
    assert ranked[0].startswith('1. "Morning set" by @u_7 — score 1')
    assert ranked[0].endswith("(3 likes, 1 share, 1 tip)")
    assert ranked[1].startswith('2. "Quiet post" by @u_8') and ranked[1].endswith("(2 comments)")
    assert ranked[2].startswith('3. "Deep dive" by @u_9') and ranked[2].endswith("(1 like)")
    score = float(re.search(r"score ([\d.]+)", ranked[0]).group(1))  # type: ignore[union-attr]
    assert 11.9 <= score <= 12.0  # 3 likes + a share (5) + a tip (4), barely decayed

    text = await admin.say("/revenue")
    assert "Today: $39.99 — 2 purchases, 1 new membership" in text
    assert "Tips today: 22.5 HRS in 3 tips" in text
    assert "Top seller today: @u_7 ($24.99)" in text

    text = await admin.say("/brief")
    local = now.astimezone(ZoneInfo("Europe/Berlin"))
    assert lines(text) == [
        f"📊 OURS Daily Brief — {local:%b} {local.day}, {local.year}",
        "",
        "👥 Users: 7 (+7 today)",
        "📝 Content: 1 new post, 1 video, 1 article",
        "⏣ HOURS: 140 earned, 22.5 tipped, 5 spent",
        "💰 Revenue: $39.99 today ($39.99 this month)",
        '🔥 Trending: "Morning set" by @u_7 (5 interactions)',
        "🚀 Top Earner: @u_7 (115.5 HRS today)",
        "⚠️ Issues: None",
        "",
        "Next milestone: 10 users (3 to go)",
    ]

    assert (await admin.say("/status now")).startswith("Usage: /status")
    assert (await admin.say("/alerts maybe")).startswith("Usage: /alerts on|off")
    assert (await admin.say("/alerts")).startswith("Usage: /alerts on|off")
    assert (await admin.say("/hours everything")).startswith("Usage: /hours")
    assert "I don't know that one" in await admin.say("/nonsense")
    help_text = await admin.say("/help")
    for command in ("/status", "/brief", "/hours", "/trending", "/revenue", "/alerts on|off"):
        assert command in help_text

    assert "Real-time alerts are on" in await admin.say("/alerts on")
    before = len(telegram.delivered(4242))
    await publish(server, "hours.tipped", from_user="u_3", to_user="u_8", amount=5)
    await publish(server, "hours.tipped", from_user="u_3", to_user="u_8", amount=15)
    await publish(
        server,
        "storefront.purchased",
        order_id="o_3",
        buyer_id="u_4",
        seller_id="u_9",
        product_id="p_9",
        amount_cents=999,
    )
    await telegram.wait_delivered(4242, before + 2)
    await settle(server, 22)
    assert [c.text for c in telegram.delivered(4242)[before:]] == [
        "💸 Tip over 10 HRS: 15 HRS from @u_3 to @u_8",
        "🛒 Purchase: $9.99 — @u_4 bought p_9 from @u_9 (order o_3)",
    ]
    assert len(telegram.delivered(4242)) == before + 2  # the 5 HRS tip raised nothing

    assert "Unlinked" in await admin.say("/unlink")
    assert "not linked" in await admin.say("/status")
    _, me = await http(server, "GET", "/v1/me/telegram", server.token("boss", "admin"))
    assert me["data"] == {"linked": False}


async def test_non_admins_are_refused_admin_commands(
    server: ServerHandle, telegram: FakeTelegram
) -> None:
    chat, reply = await link(server, telegram, "u_5", "creator", 5005)
    assert "Linked to @u_5." in reply and "08:00" not in reply
    for command in ("/status", "/brief", "/trending", "/revenue", "/alerts on"):
        answer = await chat.say(command)
        assert answer.startswith(f"Sorry, {command.split()[0]} is for OURS admins only"), answer
        assert "role is creator" in answer
    assert (await chat.say("/hours")).startswith("⏣ Your HOURS balance: 0 HRS")
    # no brief was planned for a non-admin
    day = next_date("UTC", feature(server).clock.now())
    assert await server.node.scheduler.get(job_key("u_5", day)) is None
    stranger = Chat(server, telegram, 6006)
    assert "not linked" in await stranger.say("/status")
    assert "not linked" in await stranger.say("/hours")


async def test_link_codes_are_one_time_expire_and_are_validated(
    server: ServerHandle, telegram: FakeTelegram
) -> None:
    token = server.token("u_6", "admin")
    status, body = await http(server, "POST", "/v1/me/telegram/link", token, json={})
    assert status == 201
    data = body["data"]
    assert data["tz"] == "UTC" and data["command"] == f"/start {data['code']}"
    assert data["url"] == f"https://t.me/{USERNAME}?start={data['code']}"
    first = Chat(server, telegram, 7001)
    assert "Linked to @u_6 (admin)" in await first.say(f"/start {data['code']}")
    assert "invalid, already used or expired" in await Chat(server, telegram, 7002).say(
        f"/start {data['code']}"
    )

    status, body = await http(server, "POST", "/v1/me/telegram/link", token, json={})
    f = feature(server)
    f.clock = ManualClock(f.clock.now() + timedelta(minutes=10, seconds=1))
    assert "expired" in await Chat(server, telegram, 7003).say(f"/start {body['data']['code']}")

    status, body = await http(
        server, "POST", "/v1/me/telegram/link", token, json={"tz": "Mars/Olympus"}
    )
    assert status == 400 and body["errors"][0]["code"] == "bad_request"
    status, body = await http(server, "POST", "/v1/me/telegram/link", token, json={"x": 1})
    assert status == 400
    status, body = await http(server, "POST", "/v1/me/telegram/link", None, json={})
    assert status == 401
    group = Chat(server, telegram, -100)
    update = message_update(-100, "/start whatever", chat_type="group", user_id=1)
    assert f.bot is not None
    await f.dp.feed_update(f.bot, Update.model_validate(update, context={"bot": f.bot}))
    assert "private chat" in (await telegram.wait_delivered(group.chat_id, 1))[0].text  # type: ignore[operator]


async def test_alerts_go_to_admins_who_turned_them_on(
    server: ServerHandle, telegram: FakeTelegram
) -> None:
    on, _ = await link(server, telegram, "a_on", "admin", 8001)
    off, _ = await link(server, telegram, "a_off", "admin", 8002)
    await link(server, telegram, "u_plain", "user", 8003)
    await on.say("/alerts on")
    assert "alerts are off" in await off.say("/alerts off")
    counts = {c: len(telegram.delivered(c)) for c in (8001, 8002, 8003)}
    await publish(server, "hours.tipped", from_user="u_1", to_user="u_2", amount=10)  # not > 10
    await publish(server, "hours.tipped", from_user="u_1", to_user="u_2", amount=10.01)
    calls = await telegram.wait_delivered(8001, counts[8001] + 1)
    assert calls[-1].text == "💸 Tip over 10 HRS: 10.01 HRS from @u_1 to @u_2"
    await settle(server, 2)
    # errors: 5xx answers counted by the HTTP metrics make the error-rate rule fire
    for _ in range(6):
        metrics.HTTP_REQUESTS.labels("GET", "/v1/test-failure", "500").inc()
    await feature(server).health.beat()
    calls = await telegram.wait_delivered(8001, counts[8001] + 2)
    assert calls[-1].text is not None and calls[-1].text.startswith("🚨 Error spike: ")
    assert "in the last 60 s" in calls[-1].text
    await feature(server).health.beat()  # cooldown: a second beat does not repeat it
    assert len(telegram.delivered(8001)) == counts[8001] + 2
    assert len(telegram.delivered(8002)) == counts[8002]
    assert len(telegram.delivered(8003)) == counts[8003]
    text = await on.say("/status")
    assert text.startswith("🔴 OURS status")


async def test_webhook_checks_the_secret_token(
    server: ServerHandle, telegram: FakeTelegram
) -> None:
    path = "/v1/webhooks/telegram"
    update = message_update(9001, "/help")
    status, _ = await http(server, "POST", path, json=update)
    assert status == 401
    status, _ = await http(
        server, "POST", path, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}
    )
    assert status == 401
    assert telegram.messages(9001) == []
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    status, _ = await http(server, "POST", path, json={"hello": 1}, headers=good)
    assert status == 400
    status, body = await http(server, "POST", path, json=update, headers=good)
    assert status == 200 and body["success"]
    reply = (await telegram.wait_delivered(9001, 1))[0].text
    assert reply is not None and "/start <code>" in reply


async def test_without_a_token_the_routes_say_unavailable(settings: Settings) -> None:
    handle = await start_server(settings, free_port())
    try:
        status, body = await http(
            handle, "POST", "/v1/me/telegram/link", handle.token("u_1"), json={}
        )
        assert status == 503 and body["errors"][0]["code"] == "unavailable"
        status, _ = await http(handle, "POST", "/v1/webhooks/telegram", json={"update_id": 1})
        assert status == 503
    finally:
        await handle.stop()


def test_alert_rules_are_data() -> None:
    rules = load_rules(
        '[{"kind": "event", "name": "huge_tip", "event_type": "hours.tipped", "field": "amount",'
        ' "gt": 100, "text": "{amount_hours} HRS to @{to_user} {nope}"},'
        ' {"kind": "error_rate", "name": "errors", "min_errors": 1, "text": "{ratio}"}]'
    )
    tip = build_event(
        {"type": "hours.tipped", "payload": {"from_user": "a", "to_user": "b", "amount": 150}}
    )
    small = build_event(
        {"type": "hours.tipped", "payload": {"from_user": "a", "to_user": "b", "amount": 99}}
    )
    event_rule = rules[0]
    assert isinstance(event_rule, EventRule)
    assert event_rule.matches(tip) and not event_rule.matches(small)
    assert event_rule.render(tip) == "150 HRS to @b ?"
    assert load_rules(None) == DEFAULT_RULES
    for bad in (
        '[{"kind": "event", "name": "x", "event_type": "no.such", "text": "t"}]',
        '[{"kind": "event", "name": "x", "event_type": "hours.tipped", "text": "t"},'
        ' {"kind": "event", "name": "x", "event_type": "hours.spent", "text": "t"}]',
        '[{"kind": "event", "name": "x", "event_type": "hours.tipped"}]',
        "not json",
    ):
        with pytest.raises(ValueError, match="OURS_TELEGRAM_ALERT_RULES"):
            load_rules(bad)
