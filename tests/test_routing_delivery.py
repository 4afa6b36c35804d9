"""The router end to end: events in, sockets / FCM / Resend / Twilio fakes out, the delivery
log explaining each outcome."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env

FOLLOWED = "user.followed"


def followed(follower: str, followee: str) -> dict[str, str]:
    return {"follower_id": follower, "followee_id": followee}


@pytest.mark.parametrize("routing_backend", ["memory", "redis"])
async def test_follow_reaches_sockets_and_every_device_not_sms(env: Env) -> None:
    await env.contact("ana", email="ana@example.com", phone="+4915112345678", phone_verified=True)
    phone_a, phone_b = await env.socket("ana"), await env.socket("ana")
    actor = await env.socket("bo")
    assert (await phone_a.call("device:register", {"token": "tok-a", "platform": "android"}))["ok"]
    assert (await phone_b.call("device:register", {"token": "tok-i", "platform": "ios"}))["ok"]

    event_id = await env.publish(FOLLOWED, followed("bo", "ana"), ["user:ana"], actor="bo")

    for sock in (phone_a, phone_b):
        [note] = await sock.wait_for("notification:new")
        assert note["kind"] == "follow" and note["priority"] == "standard"
        assert note["body"] == "bo followed you" and note["unread"] == 1
    await env.settle()
    assert sorted(m["token"] for m in env.fcm.messages) == ["tok-a", "tok-i"]
    assert {m["notification"]["body"] for m in env.fcm.messages} == {"bo followed you"}
    assert env.twilio.requests == []
    assert "notification:new" not in actor.received  # never told of their own action

    log = await env.deliveries(event_id, "ana")
    assert {ch: (r["state"], r["reason"]) for ch, r in log.items()} == {
        "in_app": ("delivered", None),
        "push": ("sent", None),
        "sms": ("skipped", "priority"),
        "email": ("queued", "batched"),  # waits for the hourly email
        "telegram": ("skipped", "not_configured"),
    }
    assert log["push"]["detail"] == "2/2 devices"
    assert log["telegram"]["detail"] == "telegram not configured"
    assert await env.deliveries(event_id, "bo") == {}

    nid = note["id"]
    status, body = await env.http(
        "GET", f"/v1/notifications/{nid}/deliveries", token=env.server.token("ana")
    )
    assert status == 200 and body["data"]["user_id"] == "ana"
    assert {d["channel"]: d["state"] for d in body["data"]["deliveries"]}["sms"] == "skipped"
    status, body = await env.http(
        "GET", f"/v1/notifications/{nid}/deliveries", token=env.server.token("bo")
    )
    assert status == 404 and body["errors"][0]["code"] == "not_found"
    status, body = await env.http(
        "GET", f"/v1/notifications/{nid}/deliveries", token=env.server.token("root", "admin")
    )
    assert status == 200 and len(body["data"]["deliveries"]) == 5
    for sock in (phone_a, phone_b, actor):
        await sock.close()


async def test_quiet_hours_hold_push_and_send_one_summary_when_they_end(env: Env) -> None:
    await env.prefs("ana", timezone="Europe/Berlin")  # quiet 23:00-08:00 by default
    await env.device("ana", "tok-a")
    env.clock.set(datetime(2030, 3, 4, 22, 30, tzinfo=UTC))  # 23:30 in Berlin
    events = [
        await env.publish(FOLLOWED, followed("bo", "ana"), ["user:ana"]),
        await env.publish(
            "content.liked", {"content_id": "c1", "user_id": "cy", "creator_id": "ana"}
        ),
        await env.publish(
            "content.commented",
            {"content_id": "c2", "user_id": "di", "creator_id": "ana", "comment_id": "m1"},
        ),
    ]
    await env.settle()
    assert env.fcm.requests == []
    for eid in events:
        push = (await env.deliveries(eid, "ana"))["push"]
        assert (push["state"], push["reason"]) == ("queued", "quiet_hours")
        assert push["not_before"] == "2030-03-05T07:00:00+00:00"  # 08:00 Berlin

    env.clock.set(datetime(2030, 3, 5, 6, 59, 59, tzinfo=UTC))
    await env.settle()
    assert env.fcm.requests == []
    env.clock.set(datetime(2030, 3, 5, 7, 0, 1, tzinfo=UTC))
    await env.settle()
    [summary] = env.fcm.messages
    assert summary["notification"]["title"] == "While you were away: 3 new notifications"
    assert "bo followed you" in summary["notification"]["body"]
    for eid in events:
        push = (await env.deliveries(eid, "ana"))["push"]
        assert (push["state"], push["reason"]) == ("sent", "quiet_hours")
        assert push["detail"].startswith("one message for 3 notifications")


async def test_immediate_breaks_quiet_hours_only_when_allowed(env: Env) -> None:
    await env.device("ana", "tok-a")
    env.clock.set(datetime(2030, 3, 4, 23, 30, tzinfo=UTC))
    tip = {"from_user": "bo", "to_user": "ana", "amount": 25}
    held = await env.publish("hours.tipped", tip, ["user:ana"])
    await env.settle()
    assert (await env.deliveries(held, "ana"))["push"]["reason"] == "quiet_hours"
    assert env.fcm.messages == []

    await env.prefs("ana", critical_breaks_quiet=True)
    now = await env.publish("hours.tipped", tip, ["user:ana"])
    await env.settle()
    assert (await env.deliveries(now, "ana"))["push"]["state"] == "sent"
    [msg] = env.fcm.messages
    assert msg["notification"]["body"] == "bo tipped you 25.0 HRS"
    assert msg["android"]["priority"] == "high"
    # a standard one still waits
    follow = await env.publish(FOLLOWED, followed("cy", "ana"))
    assert (await env.deliveries(follow, "ana"))["push"]["state"] == "queued"


async def test_five_standard_events_in_ten_minutes_make_one_email(env: Env) -> None:
    await env.contact("ana", email="ana@example.com")
    events = [
        ("user.followed", followed("bo", "ana")),
        ("content.liked", {"content_id": "c1", "user_id": "cy", "creator_id": "ana"}),
        (
            "content.commented",
            {
                "content_id": "c2",
                "user_id": "di",
                "creator_id": "ana",
                "comment_id": "m1",
                "text": "great set",
            },
        ),
        ("content.liked", {"content_id": "c3", "user_id": "ed", "creator_id": "ana"}),
        ("user.subscribed", {"subscriber_id": "fa", "creator_id": "ana"}),
    ]
    ids = []
    for type_, payload in events:
        ids.append(await env.publish(type_, payload))
        await env.settle()
        env.clock.advance(minutes=2)
    assert env.resend.requests == []
    env.clock.advance(minutes=6)  # 15 minutes after the first
    await env.settle()
    [email] = env.resend.emails
    assert email["to"] == ["ana@example.com"]
    assert email["subject"] == "New on OURS: 5 new notifications"
    for text in (
        "bo followed you",
        "cy liked your post",
        "di commented: great set",
        "ed liked your post",
        "fa subscribed to you",
    ):
        assert text in email["text"] and text in email["html"]
    provider_ids = {(await env.deliveries(e, "ana"))["email"]["provider_id"] for e in ids}
    assert provider_ids == {email["id"]}

    # the next one waits until an hour after that email
    late = await env.publish(FOLLOWED, followed("gi", "ana"))
    env.clock.advance(minutes=59)
    await env.settle()
    assert len(env.resend.emails) == 1
    assert (await env.deliveries(late, "ana"))["email"]["state"] == "queued"
    env.clock.advance(minutes=1)
    await env.settle()
    assert len(env.resend.emails) == 2
    assert env.resend.emails[1]["subject"] == "gi and bo followed you"  # grew the follow


async def test_fcm_429_is_retried_after_its_retry_after(env: Env) -> None:
    await env.device("ana", "tok-a")
    env.fcm.fail_next(429, retry_after=30)
    eid = await env.publish(FOLLOWED, followed("bo", "ana"))
    await env.settle()
    push = (await env.deliveries(eid, "ana"))["push"]
    assert (push["state"], push["reason"], push["attempts"]) == ("queued", "provider_error", 1)
    wait = datetime.fromisoformat(push["not_before"]) - env.clock()
    assert 30 <= wait.total_seconds() <= 33
    assert len(env.fcm.requests) == 1 and env.fcm.messages == []

    env.clock.advance(seconds=29)
    await env.settle()
    assert len(env.fcm.requests) == 1
    env.clock.advance(seconds=5)
    await env.settle()
    assert len(env.fcm.messages) == 1
    push = (await env.deliveries(eid, "ana"))["push"]
    assert (push["state"], push["attempts"]) == ("sent", 2)


async def test_unregistered_token_is_pruned_and_never_retried(env: Env) -> None:
    await env.device("ana", "tok-old", "ios")
    await env.device("ana", "tok-new", "android")
    await env.device("cy", "tok-gone", "web")
    env.fcm.unregistered |= {"tok-old", "tok-gone"}
    env.fcm.invalid.add("tok-bad")
    await env.device("cy", "tok-bad", "web")

    eid = await env.publish(FOLLOWED, followed("bo", "ana"))
    await env.settle()
    push = (await env.deliveries(eid, "ana"))["push"]
    assert push["state"] == "sent"
    assert push["detail"] == "1/2 devices; 1 invalid token(s) pruned"
    assert await env.feature.store.devices.of_user("ana") == [("tok-new", "android")]

    eid = await env.publish(FOLLOWED, followed("bo", "cy"))
    await env.settle()
    push = (await env.deliveries(eid, "cy"))["push"]
    assert (push["state"], push["reason"]) == ("failed", "invalid_token")
    assert await env.feature.store.devices.of_user("cy") == []
    sent_before = len(env.fcm.requests)
    env.clock.advance(hours=2)
    await env.settle()
    assert len(env.fcm.requests) == sent_before  # not retried


async def test_redelivered_event_sends_nothing_twice(env: Env) -> None:
    await env.contact("ana", email="ana@example.com")
    await env.device("ana", "tok-a")
    sock = await env.socket("ana")
    event_id = str(uuid.uuid4())
    body = followed("bo", "ana")
    await env.publish(FOLLOWED, body, event_id=event_id)
    await env.publish(FOLLOWED, body, event_id=event_id, wait=False)  # a duplicate publish
    event = await env.server.node.events.get(event_id)
    assert event is not None
    await env.feature.router.handle(event)  # the bus redelivering it after a crash
    await env.feature.router.handle(event)
    env.clock.advance(hours=1)
    await env.settle()
    assert len(env.fcm.messages) == 1
    assert len(env.resend.emails) == 1
    assert len(await env.feature.store.outbox.of_event(event_id)) == 5
    await sock.wait_for("notification:new")
    [item] = (await sock.call("notification:list", {}))["data"]["items"]
    assert item["event_count"] == 1
    assert len(sock.received["notification:new"]) == 1
    await sock.close()


async def test_read_in_app_cancels_the_deferred_push_and_email(env: Env) -> None:
    await env.contact("ana", email="ana@example.com")
    await env.device("ana", "tok-a")
    env.clock.set(datetime(2030, 3, 4, 23, 30, tzinfo=UTC))  # quiet hours (UTC)
    reader, other = await env.socket("ana"), await env.socket("ana")
    eid = await env.publish(FOLLOWED, followed("bo", "ana"))
    [note] = await reader.wait_for("notification:new")
    ack = await reader.call("notification:read", {"id": note["id"]})
    assert ack == {"ok": True, "data": {"read": [note["id"]], "cancelled": 2, "unread": 0}}
    [seen] = await other.wait_for("notification:read")  # the other device learns it
    assert seen == {"ids": [note["id"]], "all": False, "unread": 0}

    env.clock.set(datetime(2030, 3, 5, 9, 0, tzinfo=UTC))
    await env.settle()
    assert env.fcm.requests == [] and env.resend.requests == []
    log = await env.deliveries(eid, "ana")
    for ch in ("push", "email"):
        assert (log[ch]["state"], log[ch]["reason"]) == ("skipped", "read")
    await reader.close()
    await other.close()


async def test_a_provider_down_blocks_nobody_and_ends_in_a_dead_letter(env: Env) -> None:
    await env.contact("ana", email="ana@example.com", phone="+4915112345678", phone_verified=True)
    await env.device("ana", "tok-a")
    env.resend.fail_next(500, times=10)
    eid = await env.publish(
        "storefront.purchased",
        {
            "order_id": "o1",
            "buyer_id": "bo",
            "seller_id": "ana",
            "product_id": "poster",
            "amount_cents": 1999,
        },
    )
    await env.settle()
    log = await env.deliveries(eid, "ana")
    assert log["push"]["state"] == "sent" and log["sms"]["state"] == "sent"
    [sms] = env.twilio.messages
    assert sms["to"] == "+4915112345678" and "bo bought poster (19.99 USD)" in sms["body"]
    for _ in range(4):  # due after the gather window, then after each backoff
        env.clock.advance(hours=2)
        await env.settle()
    email = (await env.deliveries(eid, "ana"))["email"]
    assert (email["state"], email["reason"], email["attempts"]) == ("failed", "provider_error", 3)
    assert email["detail"].startswith("gave up after 3 attempts: Resend 500")
    assert len(env.resend.requests) == 3


async def test_held_push_respects_a_preference_changed_meanwhile(env: Env) -> None:
    await env.device("ana", "tok-a")
    env.clock.set(datetime(2030, 3, 4, 23, 30, tzinfo=UTC))
    eid = await env.publish(FOLLOWED, followed("bo", "ana"))
    await env.prefs("ana", channels={"push": False})
    env.clock.set(datetime(2030, 3, 5, 8, 30, tzinfo=UTC))
    await env.settle()
    push = (await env.deliveries(eid, "ana"))["push"]
    assert (push["state"], push["reason"]) == ("skipped", "preference")
    assert env.fcm.requests == []
