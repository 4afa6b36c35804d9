"""Watching now (room:count), content counters, feed:subscribe and token refresh."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests import jsclient
from tests.conftest import JWT_SECRET, PgCluster, free_port, make_settings, redis_settings
from tests.helpers import ServerHandle, connect, spawn_server


async def test_room_count_and_content_counters(server: ServerHandle) -> None:
    a = await connect(server.url, "/feed", server.token("a"))
    b = await connect(server.url, "/live", server.token("b"))
    await a.call("room:join", {"room": "content:c7"})
    await b.call("room:join", {"room": "content:c7"})
    counts = await a.wait_for("room:count", timeout=5)
    for _ in range(30):
        if counts[-1]["count"] == 2:
            break
        await a.wait_for("room:count", len(counts) + 1, timeout=5)
    assert counts[-1] == {"room": "content:c7", "count": 2}
    async with aiohttp.ClientSession() as s, s.get(server.url + "/v1/rooms/content:c7/count") as r:
        assert (await r.json())["data"] == {"room": "content:c7", "count": 2}
    async with aiohttp.ClientSession() as s, s.get(server.url + "/v1/rooms/zone:x/count") as r:
        assert r.status == 400
    for kind in ("content.liked", "content.shared"):
        await server.publish({"type": kind, "subjects": [], "payload": {"content_id": "c7"}})
    await server.publish(
        {
            "type": "hours.tipped",
            "subjects": [],
            "payload": {"from_user": "x", "to_user": "y", "amount": 2.5, "content_id": "c7"},
        }
    )
    for _ in range(50):
        got = a.received.get("content:counters") or []
        if got and got[-1]["reactions"] == 2 and got[-1]["tips"] == 2.5:
            break
        await asyncio.sleep(0.1)
    assert a.received["content:counters"][-1] == {
        "content_id": "c7",
        "views": 2,
        "tips": 2.5,
        "reactions": 2,
    }
    await b.close()
    for _ in range(30):
        if a.received["room:count"][-1]["count"] == 1:
            break
        await asyncio.sleep(0.1)
    assert a.received["room:count"][-1]["count"] == 1
    await a.close()


async def test_feed_subscribe_sets_zones(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("u"))
    ack = await c.call("feed:subscribe", {"zones": ["music", "art"]})
    assert ack["ok"] and set(ack["data"]["offsets"]) == {"zone:music", "zone:art"}
    await c.call("feed:subscribe", {"zones": ["art", "news"]})
    for zone in ("music", "art", "news"):
        await server.publish(
            {
                "type": "content.created",
                "subjects": [f"zone:{zone}"],
                "payload": {"content_id": zone, "kind": "post"},
            }
        )
    await c.wait_for("content.created", 2)
    await asyncio.sleep(0.3)
    assert sorted(e["payload"]["content_id"] for e in c.received["content.created"]) == [
        "art",
        "news",
    ]
    bad = await c.call("feed:subscribe", {"zones": ["bad zone"]})
    assert bad["error"]["code"] == "bad_request"
    await c.close()


async def test_token_refresh_keeps_the_socket_and_expiry_disconnects(server: ServerHandle) -> None:
    server.node.sweep_interval = 0.2
    short = jwt.encode({"sub": "r", "exp": int(time.time()) - 4}, JWT_SECRET)  # inside leeway
    keeper = await connect(server.url, "/feed", server.token("r", ttl=600))
    ack = await keeper.call("auth:refresh", {"token": server.token("r", ttl=1200)})
    assert ack["ok"] and ack["data"]["expires_at"] > time.time() + 1100
    other = await keeper.call("auth:refresh", {"token": server.token("someone-else")})
    assert other["error"]["code"] == "forbidden"
    bad = await keeper.call("auth:refresh", {"token": "nope"})
    assert bad["error"]["code"] == "unauthorized"
    expiring = await connect(server.url, "/feed", short)
    (notice,) = await expiring.wait_for("server:disconnect", timeout=10)
    assert notice["code"] == "token_expired"
    await asyncio.sleep(0.5)
    assert not expiring.sio.connected
    assert (await keeper.call("room:join", {"room": "zone:ok"}))["ok"]
    await keeper.close()


@pytest.mark.backends("redis")
async def test_counts_are_cluster_wide(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, **redis_settings(backend), database_url=await pg_clusters["machine"].fresh()
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        on_a = [await connect(a.url, "/live", a.token(f"a{i}")) for i in range(3)]
        on_b = [await connect(b.url, "/live", b.token(f"b{i}")) for i in range(2)]
        for c in [*on_a, *on_b]:
            await c.call("room:join", {"room": "live:l1"})
        for c in (on_a[0], on_b[0]):
            for _ in range(50):
                got = c.received.get("room:count") or []
                if got and got[-1]["count"] == 5:
                    break
                await asyncio.sleep(0.1)
            assert c.received["room:count"][-1]["count"] == 5
        for c in [*on_a, *on_b]:
            await c.close()
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_1000_js_clients_get_the_count_at_most_once_a_second(server: ServerHandle) -> None:
    async with jsclient.JsClients() as js:
        ids = []
        for i in range(1000):
            cid, res = await js.connect(server.url, "/live", {"token": server.token(f"v{i}")})
            assert res["ok"]
            ids.append(cid)
        await asyncio.gather(*(js.emit(c, "room:join", {"room": "live:big"}) for c in ids))
        await asyncio.sleep(2.5)
        for c in ids:
            res = await js._call(cmd="received", id=c, event="room:count")
            assert res["events"][-1] == {"room": "live:big", "count": 1000}
            times = res["times"]
            assert all(b - a >= 900 for a, b in itertools.pairwise(times))  # ms
