"""Rate limits: token buckets per user and per IP for sockets and HTTP, connection attempts per
IP, in-process and shared across processes on Redis and on a Redis Cluster."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from server import redis_client
from server.ratelimit import Bucket
from server.ratelimit_redis import RedisLimiter
from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings, redis_settings
from tests.helpers import connect, connect_error, spawn_server, start_server

LIMITS = {"rate_user_per_min": 100, "rate_ip_per_min": 100_000, "rate_connect_per_min": 100_000}


async def test_101st_socket_event_is_refused_and_others_unaffected(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(tmp_path, database_url=await pg_clusters["embedded"].fresh(), **LIMITS)
    srv = await start_server(settings, free_port())
    try:
        flood = await connect(srv.url, "/feed", srv.token("flooder"))
        other = await connect(srv.url, "/feed", srv.token("calm"))
        acks = [await flood.call("room:join", {"room": f"zone:z{i % 50}"}) for i in range(101)]
        assert all(a["ok"] for a in acks[:100])
        refused = acks[100]
        assert refused["ok"] is False and refused["error"]["code"] == "rate_limited"
        assert 0 < refused["error"]["retry_after"] <= 1.0  # one token back in 0.6 s
        assert (await other.call("room:join", {"room": "zone:a"}))["ok"]  # unaffected
        # a second device of the flooder shares the user's bucket
        second = await connect(srv.url, "/live", srv.token("flooder"))
        assert (await second.call("room:join", {"room": "zone:a"}))["error"][
            "code"
        ] == "rate_limited"
        for c in (flood, other, second):
            await c.close()
    finally:
        await srv.stop()


async def test_limits_are_shared_across_processes_on_redis(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, redis_url=REDIS_URL, database_url=await pg_clusters["machine"].fresh(), **LIMITS
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        on_a = await connect(a.url, "/feed", a.token("flooder"))
        on_b = await connect(b.url, "/feed", b.token("flooder"))
        calm = await connect(b.url, "/feed", b.token("calm"))
        for i in range(50):
            assert (await on_a.call("room:join", {"room": f"zone:a{i}"}))["ok"]
            assert (await on_b.call("room:join", {"room": f"zone:b{i}"}))["ok"]
        ack = await on_a.call("room:join", {"room": "zone:x"})
        assert ack["error"]["code"] == "rate_limited" and ack["error"]["retry_after"] > 0
        assert (await calm.call("room:join", {"room": "zone:x"}))["ok"]
        for c in (on_a, on_b, calm):
            await c.close()
    finally:
        await a.stop()
        await b.stop()


async def test_http_429_with_retry_after_and_headers(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=await pg_clusters["embedded"].fresh(),
        rate_user_per_min=100_000,
        rate_ip_per_min=5,
        rate_connect_per_min=3,
    )
    srv = await start_server(settings, free_port())
    try:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(6):
                async with s.get(srv.url + "/v1/events/types") as r:
                    statuses.append(r.status)
                    if r.status == 200:
                        assert int(r.headers["X-RateLimit-Limit"]) == 5
                        assert "X-RateLimit-Remaining" in r.headers
                    else:
                        assert int(r.headers["Retry-After"]) >= 1
                        body = await r.json()
                        assert body["errors"][0]["code"] == "rate_limited"
            assert statuses == [200] * 5 + [429]
            async with s.get(srv.url + "/health") as r:  # probes are never limited
                assert r.status == 200
            # the platform's API key has its own bucket
            status, _ = await srv.publish(
                {"type": "content.liked", "subjects": ["content:1"], "payload": {"content_id": "1"}}
            )
            assert status == 202
            # signed provider webhooks do not take from the sender's IP bucket (a busy LiveKit
            # host sends many): unsigned ones here are refused by their check, never with 429
            for _ in range(8):
                async with s.post(srv.url + "/v1/webhooks/livekit", data=b"{}") as r:
                    assert r.status != 429, await r.text()
        # connection attempts per IP
        token = srv.token("u")
        for _ in range(3):
            c = await connect(srv.url, "/feed", token)
            await c.close()
        err = await connect_error(srv.url, "/feed", {"token": token})
        assert err["code"] == "rate_limited"
    finally:
        await srv.stop()


@pytest.mark.backends("redis", "cluster")
async def test_redis_buckets_are_shared_and_forgotten(backend: str, tmp_path: Path) -> None:
    """The limiter on its own, on one Redis and on the cluster (where a user's, an IP's and a
    route's buckets sit in different slots): two clients (two processes) share the buckets, a
    bucket refuses past its limit while the others still give, and erasure drops every bucket
    of the user."""
    settings = make_settings(tmp_path, **redis_settings(backend))
    assert settings.redis_url is not None
    clients = [
        redis_client.connect(settings.redis_url, cluster=settings.redis_cluster) for _ in range(2)
    ]
    a, b = (RedisLimiter(c, settings.redis_prefix, cluster=settings.redis_cluster) for c in clients)
    try:
        buckets: list[Bucket] = [
            ("u:alice", 10, 60),
            ("u:alice:room:join", 4, 60),
            ("ip:2001:db8::1", 100, 60),
        ]
        decisions = [await (a if i % 2 else b).take_many(buckets) for i in range(5)]
        assert [[d.allowed for d in ds] for ds in decisions] == [[True, True, True]] * 4 + [
            [True, False, True]
        ]
        assert [d.remaining for d in decisions[-1]] == [5, 0, 95]
        assert decisions[-1][1].retry_after > 0
        assert (await b.take("u:bob", 10, 60)).remaining == 9
        assert await a.forget_user("alice") == 2
        assert (await b.take("u:alice", 10, 60)).remaining == 9  # a full bucket again
        assert (await a.take("u:bob", 10, 60)).remaining == 8  # bob's is untouched
    finally:
        for c in clients:
            await c.aclose()
