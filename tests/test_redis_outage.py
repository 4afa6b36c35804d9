"""Redis outages, on a Redis server this test starts itself on a free port (never the machine's
shared one): while it is down every publish is answered 503 `unavailable` with Retry-After
within 10 s (no 500), `/health` stays up and `/ready` names Redis; when it comes back, with its
data (AOF) or empty (no persistence), publishing and delivery to the sockets that stayed
connected resume without restarting the node — the consumer groups and the fan-out lease are
re-created by the node itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from server.managers_redis import RedisManager
from server.roomlog_redis import RedisRoomLog
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings
from tests.helpers import ServerHandle, connect, start_server
from tests.outages import (
    OwnRedis,
    SteadyPublisher,
    assert_every_client_got,
    created,
    js_listeners,
    publish_until_accepted,
)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    own = OwnRedis(free_port(), tmp_path / "redis")
    own.start(keep_data=False)
    yield own
    if own.proc is not None:
        own.kill()


@pytest.fixture
async def node(
    tmp_path: Path, redis: OwnRedis, pg_clusters: dict[str, PgCluster]
) -> AsyncIterator[ServerHandle]:
    settings = make_settings(
        tmp_path, redis_url=redis.url, database_url=await pg_clusters["machine"].fresh()
    )
    handle = await start_server(settings, free_port())
    yield handle
    await handle.stop()


@pytest.mark.parametrize("keep_data", [True, False], ids=["restart-with-data", "back-empty"])
async def test_redis_down_answers_503_then_delivery_resumes(
    node: ServerHandle, redis: OwnRedis, keep_data: bool
) -> None:
    client = await connect(node.url, "/feed", node.token("listener"))
    assert (await client.call("room:join", {"room": "zone:music"}))["ok"]
    status, body = await node.publish(created(0))
    assert status == 202, body
    await client.wait_for("content.created")

    redis.kill()
    async with aiohttp.ClientSession() as http:
        for n in range(1, 6):  # during the outage: 503 + Retry-After, each within 10 s
            t0 = time.monotonic()
            async with http.post(
                node.url + "/v1/events",
                json=created(n),
                headers={"Authorization": f"Bearer {node.settings.api_keys[0]}"},
            ) as r:
                answer = await r.json()
                assert r.status == 503, answer
                assert r.headers.get("Retry-After"), dict(r.headers)
                assert answer["errors"][0]["code"] == "unavailable"
            assert time.monotonic() - t0 < 10
        async with http.get(node.url + "/health") as r:
            assert r.status == 200
        async with http.get(node.url + "/ready") as r:
            ready = await r.json()
            assert r.status == 503 and ready["data"]["checks"]["redis"] is False, ready
        # a socket event that needs Redis gets an error ack, and the connection stays
        ack = await client.call("room:join", {"room": "zone:art"})
        assert ack["ok"] or ack["error"]["code"] == "unavailable", ack

    redis.start(keep_data=keep_data)
    back = time.monotonic()
    event_id = await publish_until_accepted(node, 100, timeout=10)
    deadline = back + 5  # delivery resumes within 5 s of Redis answering again
    while True:
        got = [e for e in client.received["content.created"] if e["id"] == event_id]
        if got:
            break
        assert time.monotonic() < deadline, "no delivery after Redis came back"
        await asyncio.sleep(0.05)
    await client.close()


async def test_events_published_while_the_listener_is_away_are_caught_up(
    node: ServerHandle, redis: OwnRedis
) -> None:
    """Redis stays up but the node's pub/sub connection drops (CLIENT KILL, as a failover or
    a proxy would): events answered 202 meanwhile reach the connected socket anyway, once
    each, in order — from the room log, when the listener is back."""
    client = await connect(node.url, "/feed", node.token("listener"))
    assert (await client.call("room:join", {"room": "zone:music"}))["ok"]
    status, _ = await node.publish(created(0))
    assert status == 202
    await client.wait_for("content.created")

    killed = redis.cli("client", "kill", "type", "pubsub")
    assert int(killed or 0) >= 1, killed
    ids = [await publish_until_accepted(node, n, timeout=10) for n in range(1, 21)]
    await client.wait_for("content.created", count=21, timeout=10)
    await asyncio.sleep(0.5)  # nothing more arrives: no event twice
    got = [e["id"] for e in client.received["content.created"]][1:]
    assert got == ids
    await client.close()


async def test_a_silent_reconnect_catches_up_without_waiting_for_the_next_event(
    node: ServerHandle, redis: OwnRedis
) -> None:
    """redis-py re-establishes a killed pub/sub connection by itself; an event that went to
    the room log while the node was not subscribed (here: logged and published on a channel
    nobody hears, as a publish during the gap would be) reaches the socket when the
    connection is back, not only when the room's next event shows the gap."""
    client = await connect(node.url, "/feed", node.token("listener"))
    assert (await client.call("room:join", {"room": "zone:music"}))["ok"]
    status, _ = await node.publish(created(0))
    assert status == 202
    await client.wait_for("content.created")

    manager = node.node.fanout.manager
    assert isinstance(manager, RedisManager)
    unheard = RedisRoomLog(manager.log_redis, manager.roomlog.prefix, "nobody-listens")
    await unheard.append_publish(
        ["zone:music"],
        {"ns": "/feed", "rooms": ["zone:music"], "event": "content.created",
         "data": {"id": "unheard"}, "skip": [], "eid": "e-unheard"},
    )  # fmt: skip
    assert int(redis.cli("client", "kill", "type", "pubsub") or 0) >= 1
    got = await client.wait_for("content.created", count=2, timeout=5)
    assert got[1] == {"id": "unheard"}
    await client.close()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
@pytest.mark.parametrize("keep_data", [True, False], ids=["restart-with-data", "back-empty"])
async def test_two_nodes_js_clients_and_a_steady_publisher_through_an_outage(
    tmp_path: Path, redis: OwnRedis, pg_clusters: dict[str, PgCluster], keep_data: bool
) -> None:
    """The operator's bad night: two nodes on one Redis, official JS clients on both, the
    platform publishing 20 events/s through both nodes; Redis is killed and restarted. No
    publish is answered 500 and each is answered within 10 s; every event answered 202 reaches
    every client once (with its data kept; back empty, every event answered 202 after Redis
    returned — those before were durable only in the Redis that was lost)."""
    settings = make_settings(
        tmp_path, redis_url=redis.url, database_url=await pg_clusters["machine"].fresh()
    )
    a = await start_server(settings, free_port())
    b = await start_server(settings, free_port())
    publisher = SteadyPublisher([a, b])
    try:
        async with jsclient.JsClients() as js:
            clients = await js_listeners(js, [a, b])
            publisher.start()
            await asyncio.sleep(1.0)
            redis.kill()
            await asyncio.sleep(2.0)
            redis.start(keep_data=keep_data)
            back = time.monotonic()
            await asyncio.sleep(3.0)
            await publisher.stop()

            publisher.assert_no_500s()
            wanted = publisher.accepted(after=0.0 if keep_data else back)
            assert len(wanted) > 20
            await assert_every_client_got(js, clients, wanted)
    finally:
        await a.stop()
        await b.stop()
