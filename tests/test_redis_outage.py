"""Redis outages, on a Redis server this test starts itself on a free port (never the machine's
shared one): while it is down every publish is answered 503 `unavailable` with Retry-After
within 10 s (no 500), `/health` stays up and `/ready` names Redis; when it comes back, with its
data (AOF) or empty (no persistence), publishing and delivery to the sockets that stayed
connected resume without restarting the node — the consumer groups and the fan-out lease are
re-created by the node itself."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings
from tests.helpers import ServerHandle, connect, start_server

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class OwnRedis:
    """A redis-server of this test's own: killed and restarted at will, with or without its
    data (an append-only file in `dir`)."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, keep_data: bool) -> None:
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None


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


def created(n: int) -> dict[str, object]:
    return {
        "type": "content.created",
        "subjects": ["zone:music"],
        "payload": {"content_id": f"c_{n}", "kind": "post"},
    }


async def publish_until_accepted(node: ServerHandle, n: int, timeout: float) -> str:
    """Publish event n until it is answered 202; every other answer must be a 503."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await node.publish(created(n))
        if status == 202:
            return str(body["data"]["id"])
        assert status == 503, (status, body)
        assert time.monotonic() < deadline, "publishing did not resume"
        await asyncio.sleep(0.1)


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

    killed = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "client", "kill", "type", "pubsub"],
        capture_output=True,
        text=True,
    )
    assert int(killed.stdout.strip() or 0) >= 1, killed
    ids = [await publish_until_accepted(node, n, timeout=10) for n in range(1, 21)]
    await client.wait_for("content.created", count=21, timeout=10)
    await asyncio.sleep(0.5)  # nothing more arrives: no event twice
    got = [e["id"] for e in client.received["content.created"]][1:]
    assert got == ids
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
    answered: list[tuple[float, int, str | None]] = []  # (when, status, event id)
    stop = asyncio.Event()

    async def publisher() -> None:
        n = 0
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                node = (a, b)[n % 2]
                t0 = time.monotonic()
                async with http.post(
                    node.url + "/v1/events",
                    json=created(n),
                    headers={"Authorization": f"Bearer {settings.api_keys[0]}"},
                ) as r:
                    body = await r.json()
                    assert time.monotonic() - t0 < 10, "a publish took over 10 s"
                    eid = body["data"]["id"] if r.status == 202 else None
                    answered.append((time.monotonic(), r.status, eid))
                n += 1
                await asyncio.sleep(0.05)

    try:
        async with jsclient.JsClients() as js:
            clients = []
            for i, node in enumerate((a, b, a, b)):
                cid, res = await js.connect(node.url, "/feed", {"token": node.token(f"js{i}")})
                assert res["ok"], res
                assert (await js.emit(cid, "room:join", {"room": "zone:music"}))["ok"]
                clients.append(cid)
            task = asyncio.create_task(publisher())
            await asyncio.sleep(1.0)
            redis.kill()
            await asyncio.sleep(2.0)
            redis.start(keep_data=keep_data)
            back = time.monotonic()
            await asyncio.sleep(3.0)
            stop.set()
            await task

            statuses = {s for _, s, _ in answered}
            assert statuses <= {202, 503}, statuses
            assert 503 in statuses  # the outage was seen
            wanted = [e for t, s, e in answered if s == 202 and (keep_data or t > back)]
            assert len(wanted) > 20
            for cid in clients:
                deadline = time.monotonic() + 10
                while True:
                    got = [e["id"] for e in await js.received(cid, "content.created")]
                    if set(wanted) <= set(got):
                        break
                    assert time.monotonic() < deadline, (
                        cid,
                        len(set(wanted) - set(got)),
                        "events answered 202 never arrived",
                    )
                    await asyncio.sleep(0.2)
                assert len(got) == len(set(got)), f"{cid}: an event arrived twice"
    finally:
        await a.stop()
        await b.stop()
