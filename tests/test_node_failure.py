"""Nodes that fail: two `ours serve` processes on Redis behind a TCP load balancer, official JS
clients connected through it (reconnecting with the room offsets they hold, as
docs/protocol.md's recovery example does), the platform publishing a room event every 50 ms.

- a node killed with SIGKILL mid-stream: its clients reconnect through the balancer to the
  other node and receive every event published meanwhile exactly once, in order; its presence
  devices expire within `OURS_PRESENCE_TTL_S` (+ one expiry sweep); the cluster view shows it
  `gone`;
- the fan-out leader frozen and then killed while holding events it had read but not acked:
  the other node takes the lease and handles them (each consumer group's pending entries are
  claimed; nothing lost, nothing twice);
- a node drained with SIGTERM hands its clients over the same way and is shown `stopped`;
- a Redis Cluster primary failed over (or killed) mid-stream, on a cluster of the test's own.

The multi-node tests run on single Redis and — once the whole server runs on Redis Cluster
(`SERVER_ON_CLUSTER`) — on the shared local cluster too. The fan-out's one remaining window is
not tested here because it is not closed: a leader killed between its room-log append and its
XACK (one Redis round trip) has the successor append those events again, so clients get them
twice with the same event `id` (docs/operations.md, "When a node dies")."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from config import Settings
from server import redis_client
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings, redis_settings
from tests.helpers import ROOT, Balancer, ServerHandle, connect, spawn_server

#: True once the bus, the Socket.IO manager and every feature are cluster-safe (the issue-18
#: merge): the multi-node tests then also run on the local Redis Cluster, and the primary
#: failover test runs (on a cluster of its own).
SERVER_ON_CLUSTER = False

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e"),
    pytest.mark.backends(*(("redis", "cluster") if SERVER_ON_CLUSTER else ("redis",))),
]

ROOM = "zone:failover"
PRESENCE_TTL_S = 3.0
HEARTBEAT_S = 1.0
CLIENTS = 4  # through the balancer: two on each node


def created(n: int) -> dict[str, Any]:
    return {
        "type": "content.created",
        "subjects": [ROOM],
        "payload": {"content_id": f"c_{n}", "kind": "post", "title": str(n)},
    }


@dataclass
class Publisher:
    """The platform: `created(n)` to `target` every 50 ms until stopped (held while paused);
    a 503 (fan-out catching up after a takeover refuses for a moment) is retried after its
    Retry-After with the same Idempotency-Key, as producers do. Keeps the ids answered 202 in
    order, the number of 503s and every other status."""

    target: ServerHandle
    accepted: list[str] = field(default_factory=list)
    retried: int = 0
    refused: list[int] = field(default_factory=list)
    _go: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._go.set()
        self._task = asyncio.create_task(self._run())

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    async def stop(self) -> None:
        self._stop = True
        self._go.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        n = 0
        headers = {"Authorization": f"Bearer {self.target.settings.api_keys[0]}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while not self._stop:
                await self._go.wait()
                if self._stop:
                    return
                async with http.post(
                    self.target.url + "/v1/events",
                    json=created(n),
                    headers={**headers, "Idempotency-Key": f"failover-{n}"},
                ) as r:
                    body = await r.json()
                    if r.status == 503:
                        self.retried += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    if r.status == 202:
                        self.accepted.append(str(body["data"]["id"]))
                    else:
                        self.refused.append(r.status)
                n += 1
                await asyncio.sleep(0.05)

    async def until(self, count: int) -> None:
        """Wait until `count` more events were accepted."""
        goal = len(self.accepted) + count
        while len(self.accepted) < goal:
            await asyncio.sleep(0.02)


@dataclass
class Pair:
    """Two nodes, the balancer in front of them, the JS clients connected through it."""

    settings: Settings
    backend: str
    nodes: list[ServerHandle]
    lb: Balancer
    js: jsclient.JsClients
    clients: list[str] = field(default_factory=list)

    def redis(self) -> Any:
        return redis_client.connect(str(self.settings.redis_url), cluster=self.backend == "cluster")

    async def fanout_leader(self) -> tuple[ServerHandle, ServerHandle]:
        """(the node holding the fan-out lease, the other one), from the lease's value
        (`host:pid:random`, the holder's bus consumer name)."""
        r = self.redis()
        try:
            for _ in range(100):
                keys = [k async for k in r.scan_iter(match=f"*{self.settings.redis_prefix}*lease*")]
                holders = [await r.get(k) for k in keys if "fanout" in k]
                if holders and holders[0]:
                    pid = int(str(holders[0]).rsplit(":", 2)[1])
                    leader = next(n for n in self.nodes if n.proc and n.proc.pid == pid)
                    return leader, next(n for n in self.nodes if n is not leader)
                await asyncio.sleep(0.1)
        finally:
            await r.aclose()
        raise AssertionError("no node holds the fan-out lease")

    async def listen(self) -> None:
        """CLIENTS official JS clients through the balancer, in ROOM, reconnecting with their
        offsets (two land on each node)."""
        for i in range(CLIENTS):
            cid, res = await self.js.connect(
                self.lb.url,
                "/feed",
                {"token": self.nodes[0].token(f"js{i}")},
                reconnection=True,
                recover=True,
            )
            assert res["ok"], res
            assert (await self.js.emit(cid, "room:join", {"room": ROOM}))["ok"]
            self.clients.append(cid)
        assert sorted(self.lb.taken.values()) == [CLIENTS // 2, CLIENTS // 2], self.lb.taken

    async def ids(self, cid: str) -> list[str]:
        return [e["id"] for e in await self.js.received(cid, "content.created")]

    async def all_got(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for cid in self.clients:
            while len(await self.ids(cid)) < count:
                assert time.monotonic() < deadline, (cid, len(await self.ids(cid)), count)
                await asyncio.sleep(0.1)

    async def assert_exactly_once_in_order(self, accepted: list[str]) -> None:
        """Every client received every accepted event once, in publish order, and nothing
        else."""
        await self.all_got(len(accepted))
        await asyncio.sleep(1.0)  # a late duplicate would arrive by now
        for cid in self.clients:
            got = await self.ids(cid)
            missing = [i for i, e in enumerate(accepted) if e not in set(got)]
            assert got == accepted, (cid, len(got), len(accepted), "missing at", missing[:5])

    async def reconnected(self) -> int:
        """How many clients connected more than once."""
        return sum([len(await self.js.received(c, "connect")) > 1 for c in self.clients])

    async def status(self, via: ServerHandle) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.settings.api_keys[0]}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(via.url + "/v1/admin/cluster", headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            return dict((await r.json())["data"])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def node_settings(tmp_path: Path, dsn: str, **redis: Any) -> Settings:
    return make_settings(
        tmp_path,
        database_url=dsn,
        presence_ttl_s=PRESENCE_TTL_S,
        presence_refresh_s=1.0,
        presence_grace_s=1.0,
        node_heartbeat_s=HEARTBEAT_S,
        bus_visibility_timeout_ms=3000,  # a frozen node's reads stay pending long enough to see
        shutdown_timeout=4,
        **redis,
    )


@pytest.fixture
async def pair(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> AsyncIterator[Pair]:
    settings = node_settings(
        tmp_path, await pg_clusters["machine"].fresh(), **redis_settings(backend)
    )
    async with pair_of_nodes(settings, backend) as p:
        yield p


class pair_of_nodes:
    """Start two nodes (one after the other: the first takes the fan-out lease), the balancer
    and the JS driver; stop what is left of them at the end."""

    def __init__(self, settings: Settings, backend: str) -> None:
        self.settings, self.backend = settings, backend
        self.nodes: list[ServerHandle] = []

    async def __aenter__(self) -> Pair:
        for _ in range(2):
            self.nodes.append(await spawn_server(self.settings, free_port()))
        self.lb = await Balancer([n.port for n in self.nodes]).__aenter__()
        self.js = await jsclient.JsClients().__aenter__()
        return Pair(self.settings, self.backend, self.nodes, self.lb, self.js)

    async def __aexit__(self, *exc: object) -> None:
        await self.js.__aexit__()
        await self.lb.__aexit__()
        for node in self.nodes:
            await node.stop()


def kill(node: ServerHandle) -> None:
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(10)
    node.proc = None


async def test_a_killed_node_s_clients_recover_everything_on_the_other(pair: Pair) -> None:
    """kill -9 mid-stream (of the node not leading the fan-out: see the module's docstring):
    its clients reconnect to the survivor and get every event once, in order; its presence
    device is offline within the TTL; the cluster view shows it gone."""
    victim, survivor = (await pair.fanout_leader())[::-1]
    await pair.listen()
    watcher = await connect(survivor.url, "/presence", survivor.token("watcher"))
    assert (await watcher.call("presence:subscribe", {"user_ids": ["ana"]}))["ok"]
    ana = await connect(victim.url, "/presence", victim.token("ana"))  # a device on the victim
    await watcher.wait_for("presence:update", timeout=10)
    assert [u["status"] for u in watcher.received["presence:update"]] == ["online"]

    publisher = Publisher(survivor)
    publisher.start()
    await publisher.until(10)
    assert victim.proc is not None
    victim_pid = victim.proc.pid
    kill(victim)
    killed = time.monotonic()
    await publisher.until(40)  # two seconds more: the clients reconnect meanwhile
    await publisher.stop()
    assert publisher.refused == []

    await pair.assert_exactly_once_in_order(publisher.accepted)
    assert await pair.reconnected() == CLIENTS // 2

    # presence: the dead node's device expires after the TTL, found by the survivor's sweep
    sweep = min(2.0, PRESENCE_TTL_S / 4)
    left = PRESENCE_TTL_S + sweep + 1.0 - (time.monotonic() - killed)
    await watcher.wait_for("presence:update", 2, timeout=max(left, 0.1))
    assert [u["status"] for u in watcher.received["presence:update"]] == ["online", "offline"]

    async def shown_gone() -> bool:
        rows = (await pair.status(survivor))["nodes"]
        return [n["state"] for n in rows if n["pid"] == victim_pid] == ["gone"]

    await eventually(shown_gone, max(5.0, 3 * HEARTBEAT_S) + 3 * HEARTBEAT_S, "not shown gone")
    await watcher.close()
    await ana.sio.disconnect()


async def test_the_fanout_leader_s_unacked_events_are_claimed_when_it_dies(
    pair: Pair,
) -> None:
    """The fan-out leader freezes (SIGSTOP) while idle; the events published next are read by
    its blocked consumers — pending in their groups, never acked — and then it is killed. The
    survivor takes the fan-out lease, claims the dead node's pending entries of every group and
    handles them: every client (the leader's reconnected) gets every event once, in order; the
    event log has each; no group is left with pending entries."""
    leader, survivor = await pair.fanout_leader()
    await pair.listen()
    publisher = Publisher(survivor)
    publisher.start()
    await publisher.until(10)
    publisher.pause()

    async def settled() -> bool:
        groups = (await pair.status(survivor))["bus"]["groups"]
        return all(g["lag"] == 0 and g["pending"] == 0 for g in groups.values())

    await eventually(settled, 15, "the bus did not settle")  # the leader is idle now
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGSTOP)
    publisher.resume()
    await asyncio.sleep(1.0)
    groups = (await pair.status(survivor))["bus"]["groups"]
    held = {name: g["pending"] for name, g in groups.items() if g["pending"]}
    assert "fanout" in held, groups  # the frozen leader's blocked read took the next event
    kill(leader)
    await publisher.until(40)
    await publisher.stop()
    assert publisher.refused == []

    await pair.assert_exactly_once_in_order(publisher.accepted)
    assert await pair.reconnected() == CLIENTS // 2
    await eventually(settled, 20, "the dead node's pending entries were not all handled")
    db = await asyncpg.connect(pair.settings.database_url)
    try:
        logged = await db.fetchval(
            "SELECT count(*) FROM events WHERE id = ANY($1::uuid[])", publisher.accepted
        )
    finally:
        await db.close()
    assert logged == len(publisher.accepted)


async def test_a_node_drained_with_sigterm_hands_its_clients_over(pair: Pair) -> None:
    """SIGTERM to the fan-out leader mid-stream: it tells its clients `server:shutdown`,
    closes them and exits 0; they reconnect to the other node (which takes over the fan-out)
    and miss nothing, get nothing twice; the cluster view shows the node `stopped`; a user
    whose one device was on it is announced offline."""
    leader, survivor = await pair.fanout_leader()
    await pair.listen()
    watcher = await connect(survivor.url, "/presence", survivor.token("watcher"))
    assert (await watcher.call("presence:subscribe", {"user_ids": ["bo"]}))["ok"]
    bo = await connect(leader.url, "/presence", leader.token("bo"))  # a device on the leader
    await watcher.wait_for("presence:update", timeout=10)
    publisher = Publisher(survivor)
    publisher.start()
    await publisher.until(10)
    assert leader.proc is not None
    pid = leader.proc.pid
    leader.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(leader.proc.wait, 20)
    leader.proc = None
    assert code == 0
    await publisher.until(30)
    await publisher.stop()
    assert publisher.refused == []

    await pair.assert_exactly_once_in_order(publisher.accepted)
    told = [bool(await pair.js.received(c, "server:shutdown")) for c in pair.clients]
    assert sum(told) == CLIENTS // 2
    assert await pair.reconnected() == CLIENTS // 2
    rows = (await pair.status(survivor))["nodes"]
    assert [n["state"] for n in rows if n["pid"] == pid] == ["stopped"]
    # the drained node's device left: its watchers are told, after the grace, by that node
    await watcher.wait_for("presence:update", 2, timeout=8)
    assert [u["status"] for u in watcher.received["presence:update"]] == ["online", "offline"]
    await watcher.close()
    await bo.sio.disconnect()


# -- a Redis Cluster primary failing over -------------------------------------------------------

CLUSTER_BASE = 7201  # a cluster of this test's own: the shared one on 7101 is never failed over


@dataclass
class OwnCluster:
    """`scripts/redis-cluster` on ports CLUSTER_BASE..+5 (three primaries with a replica each)."""

    base: int = CLUSTER_BASE

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.base}/0"

    def script(self, command: str) -> str:
        done = subprocess.run(
            [os.path.join(ROOT, "scripts", "redis-cluster"), command],
            env={**os.environ, "OURS_CLUSTER_PORT": str(self.base)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    def primaries(self) -> dict[int, int]:
        """primary port -> its replica's port."""
        ids: dict[str, int] = {}
        replicas: dict[str, int] = {}
        for line in self.cli(self.base, "cluster", "nodes").splitlines():
            node_id, addr, flags, master = line.split()[:4]
            port = int(addr.split("@")[0].rsplit(":", 1)[1])
            if "master" in flags and "fail" not in flags:
                ids[node_id] = port
            elif "slave" in flags:
                replicas[master] = port
        return {port: replicas[node_id] for node_id, port in ids.items() if node_id in replicas}

    def is_primary(self, port: int) -> bool:
        return "role:master" in self.cli(port, "info", "replication")

    def healthy(self) -> bool:
        return "cluster_state:ok" in self.cli(self.base, "cluster", "info")


@pytest.fixture
async def own_cluster() -> AsyncIterator[OwnCluster]:
    cluster = OwnCluster()
    cluster.script("start")
    yield cluster
    cluster.script("stop")


@pytest.mark.skipif(
    not SERVER_ON_CLUSTER, reason="the server runs on Redis Cluster after the issue-18 merge"
)
@pytest.mark.parametrize("fault", ["failover", "kill-primary"])
async def test_a_redis_cluster_primary_failing_over_mid_stream(
    own_cluster: OwnCluster, tmp_path: Path, pg_clusters: dict[str, PgCluster], fault: str
) -> None:
    """Two nodes on a cluster of the test's own, JS clients, a steady publisher; mid-stream a
    primary goes: `failover` — every primary handed to its replica in turn (CLUSTER FAILOVER:
    no write lost), so every event answered 202 reaches every client once, in order;
    `kill-primary` — the primary holding the bus stream killed (its replica promoted after the
    node timeout; writes it had not replicated may be lost, as with a single Redis restarted
    without its data), so every event answered 202 after the cluster is healthy again reaches
    every client once. Publishing is answered 202 or 503, never 500, each within 10 s."""
    settings = node_settings(
        tmp_path, await pg_clusters["machine"].fresh(), redis_url=own_cluster.url,
        redis_cluster=True,
    )  # fmt: skip
    async with pair_of_nodes(settings, "cluster") as pair:
        await pair.listen()
        survivor = pair.nodes[1]
        publisher = Publisher(survivor)
        publisher.start()
        await publisher.until(10)
        if fault == "failover":
            for replica in own_cluster.primaries().values():
                assert own_cluster.cli(replica, "cluster", "failover") == "OK"

                async def promoted(port: int = replica) -> bool:
                    return await asyncio.to_thread(own_cluster.is_primary, port)

                await eventually(promoted, 15, f"replica {replica} was not promoted")
        else:
            r = pair.redis()
            try:
                await r.initialize()
                node = r.get_node_from_key(settings.bus_stream)
                port = int(node.port)
            finally:
                await r.aclose()
            info = own_cluster.cli(port, "info", "server")
            pid = int(
                next(x for x in info.splitlines() if x.startswith("process_id:")).split(":")[1]
            )
            os.kill(pid, signal.SIGKILL)

            async def healthy() -> bool:
                return await asyncio.to_thread(own_cluster.healthy)

            await eventually(healthy, 30, "the cluster did not recover")
        healed = len(publisher.accepted)
        await publisher.until(30)
        await publisher.stop()
        assert publisher.refused == []  # 202, or 503 and retried: never 500

        if fault == "failover":
            await pair.assert_exactly_once_in_order(publisher.accepted)
        else:
            after = publisher.accepted[healed:]
            for cid in pair.clients:

                async def has_all(c: str = cid) -> bool:
                    return set(after) <= set(await pair.ids(c))

                await eventually(has_all, 30, f"{cid} missed events answered 202")
                got = await pair.ids(cid)
                assert len(got) == len(set(got)), f"{cid}: an event arrived twice"
                assert [e for e in got if e in set(after)] == after
