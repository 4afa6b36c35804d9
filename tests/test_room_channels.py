"""Per-room channels between nodes: a node hears only the rooms it has sockets in, a join is
heard from the moment it returns, a message to several rooms reaches each socket once, and a
room's last socket leaving unsubscribes.

The manager tests run two Socket.IO servers with `RedisManager`s (the manager and the room log
alone, no node around them) on a single Redis and on the local Redis Cluster; the metrics test
runs two real `ours serve` processes on Redis (the metrics are per process)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from server import redis_client
from server.jsonutil import SocketJSON
from server.managers_redis import RedisManager
from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings, redis_settings
from tests.helpers import Client, ServerHandle, connect, spawn_server

pytestmark = pytest.mark.backends("redis", "cluster")

NS = "/"


@dataclass
class Bare:
    """One Socket.IO server on a RedisManager: a socket joins its user's room on connect and
    any room with `join` (answered with the room's offset)."""

    sio: socketio.AsyncServer
    manager: RedisManager
    runner: web.AppRunner
    url: str

    async def client(self, user: str) -> Client:
        return await connect(self.url, NS, None, auth={"user": user})


async def bare(url: str, cluster: bool, prefix: str) -> Bare:
    manager = RedisManager(
        url,
        channel=f"{prefix}:sio",
        prefix=prefix,
        json=SocketJSON,
        log_redis=redis_client.connect(url, cluster=cluster),
        cluster=cluster,
    )
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, json=SocketJSON)

    async def on_connect(sid: str, environ: Any, auth: dict[str, str]) -> None:
        await sio.enter_room(sid, f"user:{auth['user']}")

    async def join(sid: str, room: str) -> str:
        await sio.enter_room(sid, room)
        return str(await manager.roomlog.current(NS, room))

    async def leave(sid: str, room: str) -> bool:
        await sio.leave_room(sid, room)
        return True

    sio.on("connect", on_connect)
    sio.on("join", join)
    sio.on("leave", leave)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Bare(sio, manager, runner, f"http://127.0.0.1:{port}")


@pytest.fixture
async def nodes(backend: str) -> AsyncIterator[tuple[Bare, Bare]]:
    conf = redis_settings(backend)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    a = await bare(conf["redis_url"], backend == "cluster", prefix)
    b = await bare(conf["redis_url"], backend == "cluster", prefix)
    yield a, b
    for node in (a, b):
        await node.runner.cleanup()


async def quiet(c: Client, event: str, count: int) -> None:
    """Wait for `count` of `event`, then a little longer: none more may come."""
    await c.wait_for(event, count)
    await asyncio.sleep(0.3)
    assert len(c.received[event]) == count, c.received[event]


async def test_an_emit_right_after_a_join_reaches_the_socket_once(
    nodes: tuple[Bare, Bare],
) -> None:
    """The socket on B joins a room no socket of B is in; A emits the moment the join's ack
    is back: B hears it (the subscription, or the catch-up from the join point), once."""
    a, b = nodes
    c = await b.client("u1")
    for n in range(10):
        room = f"zone:fresh{n}"
        await c.call("join", room)
        await a.manager.emit("probe", {"n": n}, namespace=NS, room=room)
    await quiet(c, "probe", 10)
    assert [d["n"] for d in c.received["probe"]] == list(range(10))
    await c.close()


async def test_a_user_joined_by_the_server_hears_the_next_emit_once(
    nodes: tuple[Bare, Bare],
) -> None:
    """`join_user` from A puts the user's socket on B into a room B has no socket in; an emit
    right after it reaches the socket: B's subscription is not sent when the emit is published,
    so the catch-up from the join's offset delivers it — once, in order with what follows."""
    a, b = nodes
    c = await b.client("u2")
    for n in range(5):
        room = f"zone:joined{n}"
        await a.manager.user_control(NS, {"op": "enter", "user": "u2", "room": room})
        await a.manager.emit("probe", {"n": n, "i": 0}, namespace=NS, room=room)
        await a.manager.emit("probe", {"n": n, "i": 1}, namespace=NS, room=room)
    await quiet(c, "probe", 10)
    got = [(d["n"], d["i"]) for d in c.received["probe"]]
    assert sorted(got) == [(n, i) for n in range(5) for i in range(2)]  # each once
    for n in range(5):  # in order within each room (rooms have no order between them)
        assert [i for m, i in got if m == n] == [0, 1]
    offsets = [m["offsets"] for m in c.meta["probe"]]
    assert all(len(o) == 1 for o in offsets)
    await c.close()


async def test_a_message_to_several_rooms_reaches_each_socket_once(
    nodes: tuple[Bare, Bare],
) -> None:
    """One emit (and one `emit_many` item) to rooms x and y: a socket in both gets it once,
    with the offsets of both rooms; sockets in one of them get it once too."""
    a, b = nodes
    both = await b.client("both")
    only_x = await b.client("x")
    only_y = await a.client("y")
    await both.call("join", "zone:x")
    await both.call("join", "zone:y")
    await only_x.call("join", "zone:x")
    await only_y.call("join", "zone:y")
    await a.manager.emit("probe", {"n": 0}, namespace=NS, room=["zone:x", "zone:y"])
    await a.manager.emit_many(
        [
            ("probe", {"n": 1}, NS, ["zone:y", "zone:x"]),
            ("probe", {"n": 2}, NS, ["zone:x"]),
        ]
    )
    await quiet(both, "probe", 3)
    await quiet(only_x, "probe", 3)
    await quiet(only_y, "probe", 2)
    assert [d["n"] for d in both.received["probe"]] == [0, 1, 2]
    assert [d["n"] for d in only_y.received["probe"]] == [0, 1]
    assert set(both.meta["probe"][0]["offsets"]) == {"zone:x", "zone:y"}
    assert set(both.meta["probe"][1]["offsets"]) == {"zone:x", "zone:y"}
    x_offsets = [m["offsets"]["zone:x"] for m in only_x.meta["probe"]]
    assert x_offsets == [m["offsets"]["zone:x"] for m in both.meta["probe"]]
    for c in (both, only_x, only_y):
        await c.close()


async def test_a_leave_sent_after_an_emit_keeps_its_place_in_the_room(
    nodes: tuple[Bare, Bare],
) -> None:
    """A's `leave_user` travels on the room's channel: the user's socket on B gets what was
    emitted before it and nothing after, on the cluster too (where the user's and the room's
    channels have no order between them)."""
    a, b = nodes
    c = await b.client("u3")
    for n in range(5):
        room = f"zone:left{n}"
        await c.call("join", room)
        await a.manager.emit("before", {"n": n}, namespace=NS, room=room)
        await a.manager.user_control(NS, {"op": "leave", "user": "u3", "room": room})
        await a.manager.emit("after", {"n": n}, namespace=NS, room=room)
    await quiet(c, "before", 5)
    assert c.received["after"] == []
    await c.close()


async def test_the_last_socket_leaving_unsubscribes(nodes: tuple[Bare, Bare]) -> None:
    a, b = nodes
    c1, c2 = await b.client("v1"), await b.client("v2")
    channel = b.manager.roomlog.channel_of(NS, "zone:gone")
    await c1.call("join", "zone:gone")
    await c2.call("join", "zone:gone")
    assert channel in b.manager._sent
    await c1.call("leave", "zone:gone")
    assert channel in b.manager._sent  # one socket is still in it
    await c2.call("leave", "zone:gone")
    for _ in range(100):
        if channel not in b.manager._sent:
            break
        await asyncio.sleep(0.01)
    assert channel not in b.manager._sent
    await a.manager.emit("probe", {"n": 0}, namespace=NS, room="zone:gone")
    await c2.call("join", "zone:gone")  # back: heard again
    await a.manager.emit("probe", {"n": 1}, namespace=NS, room="zone:gone")
    await quiet(c2, "probe", 1)
    assert c2.received["probe"] == [{"n": 1}]
    for c in (c1, c2):
        await c.close()


async def test_a_run_to_a_room_arrives_in_order_with_chained_offsets(
    nodes: tuple[Bare, Bare],
) -> None:
    a, b = nodes
    c = await b.client("r1")
    await c.call("join", "live:run")
    await a.manager.emit_run(NS, "live:run", "probe", [{"n": n} for n in range(5)])
    await a.manager.emit("probe", {"n": 5}, namespace=NS, room="live:run")
    await quiet(c, "probe", 6)
    assert [d["n"] for d in c.received["probe"]] == list(range(6))
    offsets = [m["offsets"]["live:run"] for m in c.meta["probe"]]
    replay = await a.manager.roomlog.since(NS, "live:run", offsets[1])
    assert replay.recovered
    assert [e.message["data"]["n"] for e in replay.entries] == [2, 3, 4, 5]
    assert replay.head == offsets[-1]
    await c.close()


async def test_a_users_room_logs_are_erased_on_every_slot(nodes: tuple[Bare, Bare]) -> None:
    """`forget_user` finds the user's own room logs (one hash tag each, on a cluster spread
    over the nodes) and the entries of shared rooms that name them."""
    a, _ = nodes
    log = a.manager.roomlog
    for ns in ("/", "/feed", "/live"):
        await log.append_publish(["user:gone"], {"ns": ns, "rooms": ["user:gone"],
                                 "event": "e", "data": {}, "skip": [], "eid": "1"})  # fmt: skip
    shared = {"ns": NS, "rooms": ["zone:shared"], "event": "e", "skip": []}
    await log.append_publish(["zone:shared"], {**shared, "data": {"by": "user:gone"}, "eid": "2"})
    await log.append_publish(["zone:shared"], {**shared, "data": {"by": "user:kept"}, "eid": "3"})
    assert await log.forget_user("gone") == 6  # three logs and their epochs
    for ns in ("/", "/feed", "/live"):
        assert (await log.heads([(ns, "user:gone")])) == [None]
    rows = await log.redis.xrange(log._keys(NS, "zone:shared")[0])
    assert [SocketJSON.loads(f["m"])["eid"] for _, f in rows] == ["3"]


# -- two real processes: what each node's listener receives -----------------------------------


async def pubsub_metrics(node: ServerHandle) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(node.url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("ours_pubsub_") and not name.endswith("_created"):
            out[name] = float(value)
    return out


def created(n: int, room: str) -> dict[str, Any]:
    return {
        "type": "content.created",
        "subjects": [room],
        "payload": {"content_id": f"c{n}", "kind": "post", "title": str(n)},
    }


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_node_hears_only_the_rooms_it_has_sockets_in(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    """A room with sockets only on A gets events: B's listener receives nothing of them; once
    a socket on B joins, B hears the room; when it leaves, B unsubscribes."""
    settings = make_settings(
        tmp_path, redis_url=REDIS_URL, database_url=await pg_clusters["machine"].fresh()
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        on_a = await connect(a.url, "/feed", a.token("ua"))
        assert (await on_a.call("room:join", {"room": "zone:on-a"}))["ok"]
        on_b = await connect(b.url, "/feed", b.token("ub"))
        b_before = await pubsub_metrics(b)
        for n in range(20):
            assert (await a.publish(created(n, "zone:on-a")))[0] == 202
        await on_a.wait_for("content.created", 20)
        assert await pubsub_metrics(b) == b_before

        assert (await on_b.call("room:join", {"room": "zone:on-a"}))["ok"]
        joined = await pubsub_metrics(b)
        assert joined["ours_pubsub_channels"] == b_before["ours_pubsub_channels"] + 1
        for n in range(20, 25):
            assert (await a.publish(created(n, "zone:on-a")))[0] == 202
        await on_b.wait_for("content.created", 5)
        heard = await pubsub_metrics(b)
        assert heard["ours_pubsub_received_messages_total"] >= (
            joined["ours_pubsub_received_messages_total"] + 1
        )
        assert (
            heard["ours_pubsub_received_bytes_total"] > joined["ours_pubsub_received_bytes_total"]
        )

        assert (await on_b.call("room:leave", {"room": "zone:on-a"}))["ok"]
        for _ in range(100):
            left = await pubsub_metrics(b)
            if left["ours_pubsub_channels"] < joined["ours_pubsub_channels"]:
                break
            await asyncio.sleep(0.05)
        assert left["ours_pubsub_channels"] == b_before["ours_pubsub_channels"]
        for c in (on_a, on_b):
            await c.close()
    finally:
        await a.stop()
        await b.stop()
