"""POST /v1/events end to end: validation, envelope, fan-out to exactly the subject rooms,
idempotency, and the read-only routes (types, health, ready, metrics, OpenAPI)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from server.events import EVENT_TYPES
from tests.helpers import ServerHandle, connect

CREATED: dict[str, Any] = {
    "type": "content.created",
    "subjects": ["zone:music"],
    "payload": {"content_id": "c_1", "kind": "video", "title": "New set"},
}


async def test_event_reaches_every_client_in_room_and_no_one_else(server: ServerHandle) -> None:
    inside = [await connect(server.url, "/feed", server.token(f"in{i}")) for i in range(3)]
    for c in inside:
        assert (await c.call("room:join", {"room": "zone:music"}))["ok"]
    other_zone = await connect(server.url, "/feed", server.token("other"))
    await other_zone.call("room:join", {"room": "zone:sports"})
    other_ns = await connect(server.url, "/live", server.token("live"))
    await other_ns.call("room:join", {"room": "zone:music"})  # same room name, other namespace

    status, body = await server.publish(CREATED)
    assert status == 202
    assert body["success"] is True and body["errors"] == []
    assert body["meta"]["requestId"]
    event_id = body["data"]["id"]

    for c in inside:
        (env,) = await c.wait_for("content.created")
        assert env["id"] == event_id
        assert env["type"] == "content.created"
        assert env["subjects"] == ["zone:music"]
        assert env["payload"] == {"content_id": "c_1", "kind": "video", "title": "New set"}
        assert env["actor"] is None and env["ts"].endswith("+00:00")
    await asyncio.sleep(0.3)
    assert other_zone.received == {}
    assert other_ns.received == {}
    for c in [*inside, other_zone, other_ns]:
        await c.close()


async def test_idempotency_key_delivers_once(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("u"))
    await c.call("room:join", {"room": "zone:music"})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    s1, b1 = await server.publish(CREATED, headers=key)
    s2, b2 = await server.publish(CREATED, headers=key)
    assert (s1, s2) == (202, 202)
    assert b1["data"]["id"] == b2["data"]["id"]
    assert (b1["data"]["duplicate"], b2["data"]["duplicate"]) == (False, True)
    await c.wait_for("content.created")
    await asyncio.sleep(0.5)
    assert len(c.received["content.created"]) == 1
    await c.close()


async def test_event_id_makes_retry_a_no_op(server: ServerHandle) -> None:
    body = {**CREATED, "id": str(uuid.uuid4())}
    _, b1 = await server.publish(body)
    _, b2 = await server.publish(body)
    assert b1["data"] == {"id": body["id"], "duplicate": False}
    assert b2["data"] == {"id": body["id"], "duplicate": True}


async def test_event_log_records_each_event_once(server: ServerHandle) -> None:
    body = {**CREATED, "id": str(uuid.uuid4())}
    await server.publish(body)
    await server.publish(body)
    events = server.node.events
    for _ in range(50):
        if await events.get(body["id"]):
            break
        await asyncio.sleep(0.05)
    ev = await events.get(body["id"])
    assert ev is not None and ev.type == "content.created"
    assert await events.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "content.nope", "payload": {}}, "type"),
        ({"payload": {}}, "type"),
        ({"type": "content.created"}, "payload"),
        ({"type": "content.created", "payload": {"kind": "video"}}, "payload.content_id"),
        (
            {"type": "content.created", "payload": {"content_id": "c", "kind": "gif"}},
            "payload.kind",
        ),
        (
            {"type": "hours.tipped", "payload": {"from_user": "a", "to_user": "b", "amount": -5}},
            "payload.amount",
        ),
        (
            {
                "type": "hours.tipped",
                "payload": {"from_user": "a", "to_user": "b", "amount": "lots"},
            },
            "payload.amount",
        ),
        ({**CREATED, "subjects": ["music"]}, "subjects"),
        ({**CREATED, "subjects": "zone:music"}, "subjects"),
        ({**CREATED, "extra": True}, "extra"),
        ({**CREATED, "payload": {**CREATED["payload"], "hack": 1}}, "payload.hack"),
        ({**CREATED, "id": "not-a-uuid"}, "id"),
    ],
)
async def test_bad_events_are_refused_with_field_errors(
    server: ServerHandle, body: dict[str, object], field: str
) -> None:
    status, resp = await server.publish(body)
    assert status == 400
    assert resp["success"] is False
    err = resp["errors"][0]
    assert err["code"] == "bad_request"
    assert field in {d["field"] for d in err["details"]}
    assert await server.node.events.count() == 0  # nothing written


async def test_http_errors(server: ServerHandle) -> None:
    url = server.url + "/v1/events"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=CREATED) as r:
            assert r.status == 401
            assert (await r.json())["errors"][0]["code"] == "unauthorized"
        async with s.post(url, json=CREATED, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {server.settings.api_keys[0]}"}
        big = {**CREATED, "payload": {**CREATED["payload"], "title": "x" * 200_000}}
        async with s.post(url, json=big, headers=auth) as r:
            assert r.status == 413
            assert (await r.json())["errors"][0]["code"] == "payload_too_large"
        async with s.post(url, data=b"{not json", headers=auth) as r:
            assert r.status == 400
            assert (await r.json())["errors"][0]["code"] == "bad_request"
        async with s.get(server.url + "/v1/nothing") as r:
            assert r.status == 404
            assert (await r.json())["errors"][0]["code"] == "not_found"
        # the server still works after all of that
        status, _ = await server.publish(CREATED)
        assert status == 202


async def test_event_types_examples_are_accepted(server: ServerHandle) -> None:
    async with aiohttp.ClientSession() as s, s.get(server.url + "/v1/events/types") as r:
        types = (await r.json())["data"]
    assert set(types) == set(EVENT_TYPES)
    for name, entry in types.items():
        assert entry["schema"]["type"] == "object"
        status, body = await server.publish(entry["example"])
        assert status == 202, (name, body)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_health_ready_metrics_openapi(server: ServerHandle) -> None:
    gauge = 'ours_connections{namespace="/feed"}'
    async with aiohttp.ClientSession() as s, s.get(server.url + "/metrics") as r:
        before = metric(await r.text(), gauge)  # the registry is per process, tests share it
    c = await connect(server.url, "/feed", server.token("m"))
    await server.publish(CREATED)
    async with aiohttp.ClientSession() as s:
        async with s.get(server.url + "/health") as r:
            assert r.status == 200 and (await r.json())["data"]["status"] == "ok"
        async with s.get(server.url + "/ready") as r:
            assert r.status == 200
            expected = {"storage": True, "bus": True}
            if server.settings.redis_url:  # the shared Redis client is checked too
                expected["redis"] = True
            assert (await r.json())["data"]["checks"] == expected
        await asyncio.sleep(0.3)
        async with s.get(server.url + "/metrics") as r:
            text = await r.text()
        assert metric(text, gauge) == before + 1
        assert 'ours_events_published_total{result="new",type="content.created"}' in text
        assert "ours_fanout_latency_seconds_bucket" in text
        assert "ours_consumer_lag" in text
        async with s.get(server.url + "/v1/openapi.json") as r:
            doc = await r.json()
        assert doc["openapi"].startswith("3.")
        assert "/v1/events" in doc["paths"]
    await c.close()


async def test_publish_pushes_back_when_fanout_is_behind(server: ServerHandle) -> None:
    node = server.node
    real_lag = node.bus.lag
    behind = server.settings.max_backlog + 1

    async def lagging() -> dict[str, int]:
        return {"fanout": behind}

    node.bus.lag = lagging  # type: ignore[method-assign]
    try:
        for _ in range(40):  # the sampler reads the lag every second
            if node.backlog == behind:
                break
            await asyncio.sleep(0.1)
        status, body = await server.publish(CREATED)
        assert status == 503 and body["errors"][0]["code"] == "unavailable"
    finally:
        node.bus.lag = real_lag  # type: ignore[method-assign]
    for _ in range(40):
        if node.backlog == 0:
            break
        await asyncio.sleep(0.1)
    status, _ = await server.publish(CREATED)
    assert status == 202
