"""Preferences (HTTP and socket), the inbox on /notifications, aggregation, caps and levels."""

from __future__ import annotations

from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env


async def test_preferences_defaults_follow_the_seeds(env: Env) -> None:
    status, body = await env.http("GET", "/v1/me/preferences", token=env.server.token("ana"))
    assert status == 200
    prefs = body["data"]
    assert prefs["level"] == "all"
    assert prefs["quiet_hours"] == {"enabled": True, "start": "23:00", "end": "08:00"}
    assert prefs["timezone"] == "UTC"
    assert (prefs["digest"], prefs["digest_day"], prefs["digest_time"]) == (
        "weekly",
        "sun",
        "09:00",
    )
    assert prefs["critical_breaks_quiet"] is False
    assert prefs["types"]["match"] is False and prefs["types"]["follow"] is True
    assert set(prefs["channels"]) == {"in_app", "push", "email", "sms", "telegram"}
    assert (prefs["email"], prefs["phone"], prefs["phone_verified"]) == (None, None, False)


async def test_preferences_update_over_http_and_socket(env: Env) -> None:
    token = env.server.token("ana")
    status, body = await env.http(
        "PUT",
        "/v1/me/preferences",
        token=token,
        json={
            "level": "matches",
            "types": {"like": False},
            "channels": {"email": False},
            "quiet_hours": {"enabled": True, "start": "22:00", "end": "07:30"},
            "timezone": "America/New_York",
            "phone": "+12025550123",
        },
    )
    assert status == 200, body
    prefs = body["data"]
    assert prefs["level"] == "matches" and prefs["types"]["like"] is False
    assert prefs["types"]["follow"] is True and prefs["channels"]["email"] is False
    assert prefs["phone"] == "+12025550123" and prefs["phone_verified"] is False

    sock = await env.socket("ana")
    ack = await sock.call("preferences:set", {"digest": "daily", "critical_breaks_quiet": True})
    assert ack["ok"] and ack["data"]["digest"] == "daily"
    assert ack["data"]["level"] == "matches"  # earlier fields kept
    ack = await sock.call("preferences:get")
    assert ack["ok"] and ack["data"]["timezone"] == "America/New_York"

    for bad, field in (
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "0151 123"}, "phone"),
        ({"quiet_hours": {"start": "25:00"}}, "quiet_hours.start"),
        ({"types": {"nonsense": True}}, "types"),
        ({"phone_verified": True}, "phone_verified"),  # not the user's to set
        ({"level": "loud"}, "level"),
    ):
        ack = await sock.call("preferences:set", bad)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", bad
        assert field in {d["field"] for d in ack["error"]["details"]}, ack
        status, body = await env.http("PUT", "/v1/me/preferences", token=token, json=bad)
        assert status == 400 and body["errors"][0]["code"] == "bad_request"
    await sock.close()


async def test_platform_verifies_the_phone_and_a_new_number_needs_it_again(env: Env) -> None:
    status, body = await env.http(
        "PUT",
        "/v1/users/ana/contact",
        token=env.server.token("ana"),
        json={"phone": "+4915112345678", "phone_verified": True},
    )
    assert status == 403 and body["errors"][0]["code"] == "forbidden"  # not by the user
    prefs = await env.contact("ana", phone="+4915112345678", phone_verified=True)
    assert prefs["phone_verified"] is True
    prefs = await env.prefs("ana", phone="+4915199999999")
    assert prefs["phone_verified"] is False
    status, _ = await env.http("GET", "/v1/me/preferences")  # an API key is not a user
    assert status == 401


async def test_inbox_list_paging_unread_and_read_all(env: Env) -> None:
    sock = await env.socket("ana")
    for n in range(5):
        await env.publish("hours.tipped", {"from_user": f"u{n}", "to_user": "ana", "amount": 1})
    page = (await sock.call("notification:list", {"limit": 2}))["data"]
    assert [i["body"] for i in page["items"]] == ["u4 tipped you 1.0 HRS", "u3 tipped you 1.0 HRS"]
    assert page["unread"] == 5 and page["next"] == page["items"][-1]["id"]
    rest = (await sock.call("notification:list", {"before": page["next"], "limit": 10}))["data"]
    assert len(rest["items"]) == 3 and rest["next"] is None
    assert (await sock.call("notification:unread"))["data"] == {"unread": 5, "mentions": 0}

    ack = await sock.call("notification:read", {"ids": [page["items"][0]["id"]]})
    assert ack["data"]["unread"] == 4
    ack = await sock.call("notification:read", {"all": True})
    assert len(ack["data"]["read"]) == 4 and ack["data"]["unread"] == 0
    assert (await sock.call("notification:list", {"unread_only": True}))["data"]["items"] == []
    status, body = await env.http(
        "GET", "/v1/me/notifications?limit=3", token=env.server.token("ana")
    )
    assert status == 200 and len(body["data"]["items"]) == 3
    bads: list[dict[str, object]] = [{}, {"id": 1, "all": True}, {"id": -1}, {"ids": []}]
    for bad in bads:
        ack = await sock.call("notification:read", bad)
        assert ack["error"]["code"] == "bad_request", bad
    await sock.close()


async def test_device_registry_over_the_socket(env: Env) -> None:
    sock = await env.socket("ana")
    ack = await sock.call("device:register", {"token": "t1", "platform": "web"})
    assert ack == {"ok": True, "data": {"registered": True, "devices": 1}}
    ack = await sock.call("device:register", {"token": "t1", "platform": "ios"})
    assert ack["data"]["devices"] == 1  # the same token again
    assert (await sock.call("device:register", {"token": "t2", "platform": "pager"}))["error"][
        "code"
    ] == "bad_request"
    bo = await env.socket("bo")
    assert (await bo.call("device:unregister", {"token": "t1"}))["data"] == {"unregistered": False}
    assert (await sock.call("device:unregister", {"token": "t1"}))["data"] == {"unregistered": True}
    assert await env.feature.store.devices.of_user("ana") == []
    await sock.close()
    await bo.close()


async def test_similar_notifications_collapse_into_one_updated_in_place(env: Env) -> None:
    sock = await env.socket("ana")
    for follower in ("bo", "cy", "di"):
        await env.publish("user.followed", {"follower_id": follower, "followee_id": "ana"})
    [new] = await sock.wait_for("notification:new")
    updates = await sock.wait_for("notification:updated", 2)
    assert new["body"] == "bo followed you"
    assert [u["body"] for u in updates] == [
        "cy and bo followed you",
        "di and 2 others followed you",
    ]
    assert {u["id"] for u in updates} == {new["id"]}
    [only] = (await sock.call("notification:list", {}))["data"]["items"]
    assert (only["actors"], only["actor_count"], only["event_count"]) == (["di", "cy", "bo"], 3, 3)
    # once read, the next follow starts a new notification
    await sock.call("notification:read", {"all": True})
    await env.publish("user.followed", {"follower_id": "ed", "followee_id": "ana"})
    items = (await sock.call("notification:list", {}))["data"]["items"]
    assert [i["body"] for i in items] == ["ed followed you", "di and 2 others followed you"]
    # and after the window a new one too
    env.clock.advance(hours=2)
    await env.publish("user.followed", {"follower_id": "fa", "followee_id": "ana"})
    assert len((await sock.call("notification:list", {}))["data"]["items"]) == 3
    await sock.close()


async def test_match_is_opt_in_and_capped_at_three_a_day(env: Env) -> None:
    router = env.feature.router
    payload = {
        "title": "Someone's doing the same thing",
        "text": "Someone else is listening to Lover",
    }
    first = await router.notify(["ana"], "match", payload, key="m0")
    [row] = [r for r in await env.feature.store.outbox.of_event(first) if r["channel"] == "in_app"]
    assert (row["state"], row["reason"]) == ("skipped", "preference")  # matches are opt-in

    await env.prefs("ana", types={"match": True})
    await env.device("ana", "tok-a")
    ids = [await router.notify(["ana"], "match", payload, key=f"m{n}") for n in range(1, 5)]
    await env.settle()
    states = []
    for eid in ids:
        log = await env.deliveries(eid, "ana")
        states.append((log["in_app"]["state"], log["push"]["state"], log["push"]["reason"]))
    assert states[:3] == [("delivered", "sent", None)] * 3
    assert states[3] == ("skipped", "skipped", "cap")
    assert len(env.fcm.messages) == 3
    # the same key again is the same notification (idempotent), not a fourth
    assert await router.notify(["ana"], "match", payload, key="m1") == ids[0]
    env.clock.advance(hours=24)
    fifth = await router.notify(["ana"], "match", payload, key="m5")
    assert (await env.deliveries(fifth, "ana"))["in_app"]["state"] == "delivered"


async def test_levels_keep_notifications_in_the_app(env: Env) -> None:
    await env.device("ana", "tok-a")
    await env.prefs("ana", level="daily")
    eid = await env.publish("hours.tipped", {"from_user": "bo", "to_user": "ana", "amount": 3})
    log = await env.deliveries(eid, "ana")
    assert log["in_app"]["state"] == "delivered"
    assert (log["push"]["state"], log["push"]["reason"]) == ("skipped", "preference")
    assert log["push"]["detail"] == "notification level is daily"

    await env.prefs("ana", level="all", types={"tip": False})
    eid = await env.publish("hours.tipped", {"from_user": "bo", "to_user": "ana", "amount": 4})
    log = await env.deliveries(eid, "ana")
    assert {r["state"] for r in log.values()} == {"skipped"}
    assert log["in_app"]["detail"] == "tip notifications are switched off"
    assert (await env.feature.inbox.page("ana", None, 10, False))["items"][0]["body"] == (
        "bo tipped you 3.0 HRS"  # the filtered one is not in the inbox
    )
    # silent kinds stay in the app: a share
    eid = await env.publish(
        "content.shared", {"content_id": "c1", "user_id": "cy", "creator_id": "ana"}
    )
    log = await env.deliveries(eid, "ana")
    assert (log["push"]["state"], log["push"]["reason"]) == ("skipped", "priority")
    await env.settle()
    assert env.fcm.messages == []


async def test_digest_sends_what_is_new_once_and_nothing_when_nothing_is_new(env: Env) -> None:
    await env.contact("ana", email="ana@example.com")
    await env.prefs(
        "ana",
        digest="daily",
        digest_time="08:30",
        timezone="Europe/Berlin",
        channels={"email": False},
    )  # no per-event email; the digest still comes
    await env.publish("user.followed", {"follower_id": "bo", "followee_id": "ana"})
    await env.publish("content.liked", {"content_id": "c1", "user_id": "cy", "creator_id": "ana"})
    jobs = await env.server.node.storage.db.fetch(
        "SELECT key, run_at, payload FROM jobs WHERE kind = 'routing.digest'"
    )
    assert len(jobs) == 1  # durable, one per user and due time
    due = jobs[0]["run_at"]
    assert due.isoformat() == "2030-03-05T07:30:00+00:00"  # 08:30 Berlin, the next morning
    env.clock.set(due)
    digests = env.feature.digests
    await digests.run(dict(jobs[0]["payload"]))  # the scheduler's call
    [mail] = env.resend.emails
    assert mail["subject"] == "Your daily OURS digest: 2 new notifications"
    assert "bo followed you" in mail["text"] and "cy liked your post" in mail["html"]
    assert await digests.send("ana", "daily", due) is False  # nothing new since
    assert len(env.resend.emails) == 1
