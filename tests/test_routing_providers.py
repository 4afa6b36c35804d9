"""Each provider's real SDK against its fake: error answers, retries and what is not retried."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.auth import Principal, Role
from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env

TIP = {"from_user": "bo", "to_user": "ana", "amount": 12}
PHONE = "+4915112345678"


async def test_fcm_401_makes_the_sdk_fetch_a_new_oauth_token(env: Env) -> None:
    await env.device("ana", "tok-a")
    first = await env.publish("hours.tipped", TIP)
    await env.settle()
    assert env.fcm.token_requests == 1
    env.fcm.fail_next(401)  # the access token was revoked
    second = await env.publish("hours.tipped", TIP)
    await env.settle()
    assert env.fcm.token_requests == 2
    for eid in (first, second):
        assert (await env.deliveries(eid, "ana"))["push"]["state"] == "sent"
    assert len(env.fcm.messages) == 2


async def test_fcm_500_once_is_absorbed_by_the_sdk_retry(env: Env) -> None:
    await env.device("ana", "tok-a")
    env.fcm.fail_next(500)
    eid = await env.publish("hours.tipped", TIP)
    await env.settle()
    assert len(env.fcm.requests) == 2 and len(env.fcm.messages) == 1
    push = (await env.deliveries(eid, "ana"))["push"]
    assert (push["state"], push["attempts"]) == ("sent", 1)


async def test_resend_429_is_retried_after_its_retry_after(env: Env) -> None:
    await env.contact("ana", email="ana@example.com")
    env.resend.fail_next(429, retry_after=120)
    eid = await env.publish("hours.tipped", TIP)
    env.clock.advance(minutes=15)
    await env.settle()
    email = (await env.deliveries(eid, "ana"))["email"]
    assert (email["state"], email["attempts"]) == ("queued", 1)
    assert "Resend 429 rate_limit_exceeded" in email["detail"]
    env.clock.advance(seconds=119)
    await env.settle()
    assert len(env.resend.requests) == 1
    env.clock.advance(seconds=15)
    await env.settle()
    [mail] = env.resend.emails
    assert mail["subject"] == "bo tipped you 12.0 HRS" and "<li>" in mail["html"]
    assert mail["text"].startswith("New on OURS")
    assert mail["idempotency_key"].startswith("email-ana-")  # the same key on every attempt
    assert (await env.deliveries(eid, "ana"))["email"]["state"] == "sent"


async def test_sms_only_to_a_verified_number_and_bad_numbers_are_not_retried(env: Env) -> None:
    await env.contact("ana", phone=PHONE)  # not verified
    eid = await env.publish("hours.tipped", TIP)
    sms = (await env.deliveries(eid, "ana"))["sms"]
    assert (sms["state"], sms["reason"]) == ("skipped", "unverified_number")

    await env.contact("ana", phone_verified=True)
    env.twilio.fail_next(429, retry_after=20)
    eid = await env.publish("hours.tipped", TIP)
    await env.settle()
    sms = (await env.deliveries(eid, "ana"))["sms"]
    assert (sms["state"], sms["attempts"]) == ("queued", 1)
    env.clock.advance(seconds=19)
    await env.settle()
    assert env.twilio.messages == []
    env.clock.advance(seconds=5)
    await env.settle()
    [msg] = env.twilio.messages
    assert (msg["to"], msg["from"], msg["body"]) == (
        PHONE,
        "+15005550006",
        "New tip: bo tipped you 12.0 HRS",
    )
    sms = (await env.deliveries(eid, "ana"))["sms"]
    assert sms["state"] == "sent" and sms["provider_id"] == msg["sid"]

    env.twilio.invalid.add(PHONE)
    eid = await env.publish("hours.tipped", TIP)
    await env.settle()
    env.clock.advance(hours=1)
    await env.settle()
    sms = (await env.deliveries(eid, "ana"))["sms"]
    assert (sms["state"], sms["reason"], sms["attempts"]) == ("failed", "invalid_number", 1)
    assert "code 21211" in sms["detail"]
    assert len(env.twilio.requests) == 3


@pytest.mark.parametrize("routing_telegram", [True])
async def test_telegram_through_the_bots_sender_when_linked(env: Env) -> None:
    assert env.telegram is not None
    bot = env.server.features.bot
    code = await bot.links.new_code(Principal("ana", Role.USER))
    assert await bot.links.redeem(code.code, 4242) is not None

    eid = await env.publish("user.followed", {"follower_id": "bo", "followee_id": "ana"})
    await env.settle()
    [call] = await env.telegram.wait_delivered(4242, 1)
    assert call.text == "New follower\nbo followed you"
    tg = (await env.deliveries(eid, "ana"))["telegram"]
    assert tg["state"] == "sent" and tg["provider_id"] is not None

    other = await env.publish("user.followed", {"follower_id": "bo", "followee_id": "cy"})
    await env.settle()
    tg = (await env.deliveries(other, "cy"))["telegram"]
    assert (tg["state"], tg["reason"]) == ("skipped", "not_linked")

    # quiet hours hold Telegram too, and it goes out as one summary
    env.clock.set(datetime(2030, 3, 4, 23, 10, tzinfo=UTC))
    await env.publish("hours.tipped", TIP)
    await env.publish("content.liked", {"content_id": "c9", "user_id": "di", "creator_id": "ana"})
    await env.settle()
    assert len(env.telegram.delivered(4242)) == 1
    env.clock.set(datetime(2030, 3, 5, 8, 0, tzinfo=UTC))
    await env.settle()
    calls = await env.telegram.wait_delivered(4242, 2)
    assert calls[1].text is not None and calls[1].text.startswith(
        "While you were away: 2 new notifications"
    )

    env.telegram.block(4242)
    env.clock.advance(hours=3)
    eid = await env.publish("hours.tipped", TIP)
    await env.settle()
    tg = (await env.deliveries(eid, "ana"))["telegram"]
    assert (tg["state"], tg["reason"]) == ("failed", "blocked")
