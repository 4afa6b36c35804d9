"""Rate limits: token buckets per user and per IP for sockets and HTTP, connection attempts per
IP, in-process and shared across processes on Redis."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings
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
