"""Audiences: the platform registers a recipient list over HTTP and names it in one event;
every member is notified once, with their own preferences; the compact skipped log still
explains each channel per user."""

from __future__ import annotations

import pytest

from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env

LIVE = {"live_id": "l_1", "host_id": "host", "title": "Late set"}


@pytest.mark.parametrize("routing_backend", ["memory", "redis"])
async def test_one_event_to_an_audience_notifies_each_member_once(env: Env) -> None:
    members = [f"fan{i:03d}" for i in range(120)] + ["host"]
    status, body = await env.http(
        "PATCH", "/v1/audiences/fans-host/members", json={"add": members, "remove": ["x"]}
    )
    assert status == 200 and body["data"]["members"] == 121 and body["data"]["removed"] == 0
    status, body = await env.http("PATCH", "/v1/audiences/fans-host/members", json={"add": ["a b"]})
    assert status == 400
    await env.prefs("fan001", types={"live": False})
    sock = await env.socket("fan002")
    body = {"type": "live.started", "payload": LIVE, "actor": "host", "audience": "fans-host"}
    body["subjects"] = ["user:fan000"]
    status, resp = await env.server.publish(body)
    assert status == 202, resp
    eid = str(resp["data"]["id"])
    await env.routed(eid)
    [note] = await sock.wait_for("notification:new")
    assert note["kind"] == "live"
    status, resp = await env.server.publish({**body, "id": eid})  # the same event again
    await env.routed(eid)
    rows = await env.feature.store.outbox.of_event(eid)
    in_app = [r["user_id"] for r in rows if r["channel"] == "in_app"]
    assert sorted(in_app) == sorted(m for m in members if m != "host")  # the actor is not told
    assert len(in_app) == len(set(in_app))
    log = await env.deliveries(eid, "fan003")
    assert log["in_app"]["state"] == "delivered"
    assert (log["sms"]["state"], log["sms"]["reason"]) == ("skipped", "no_phone")
    assert (log["telegram"]["state"], log["telegram"]["reason"]) == ("skipped", "not_configured")
    off = await env.deliveries(eid, "fan001")
    assert {r["reason"] for r in off.values()} == {"preference"} and len(off) == 5
    status, page = await env.http(
        "GET", f"/v1/notifications/{note['id']}/deliveries", token=env.server.token("fan002")
    )
    assert status == 200 and len(page["data"]["deliveries"]) == 5
    status, page = await env.http("GET", "/v1/audiences/fans-host/members?limit=100")
    assert status == 200 and len(page["data"]["members"]) == 100 and page["data"]["next"]
    status, _ = await env.http("DELETE", "/v1/audiences/fans-host")
    status, resp = await env.http("GET", "/v1/audiences/fans-host")
    assert status == 404
    await sock.close()


async def test_a_batch_of_events_aggregates_and_caps_as_one_by_one(env: Env) -> None:
    """What the bus hands over together: two follows of one user grow one inbox item (the
    second goes into the next chunk), and each event is still claimed once."""
    from server.events import Event

    def follow(i: int, follower: str) -> Event:
        return Event(
            id=f"00000000-0000-4000-8000-00000000000{i}",
            type="user.followed",
            actor=follower,
            subjects=["user:ana"],
            payload={"follower_id": follower, "followee_id": "ana"},
            ts="2030-03-04T12:00:00+00:00",
        )

    events = [follow(1, "bo"), follow(2, "cy")]
    await env.feature.router.handle_many(events)
    await env.feature.router.handle_many(events)  # redelivered: nothing twice
    status, body = await env.http("GET", "/v1/me/notifications", token=env.server.token("ana"))
    assert status == 200
    [note] = body["data"]["items"]
    assert note["event_count"] == 2 and note["actors"] == ["cy", "bo"]
    for e in events:
        log = await env.deliveries(e.id, "ana")
        assert log["in_app"]["state"] == "delivered" and len(log) == 5
