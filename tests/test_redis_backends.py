"""The features' Redis backends, each built straight on a client of the single Redis and of the
local Redis Cluster (`redis_client.connect(..., cluster=True)`): every method and every Lua
script, with entities spread so that the cluster runs them on every primary (a script or
transaction whose keys sat in two slots fails there with CROSSSLOT), a user's keys gone from
every primary after their erasure steps, and each backend's state kept across every primary of
a cluster of the test's own failing over."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bots.limiter_redis import RedisLimiter
from livechat.gate import Snapshot
from livechat.gate_redis import RedisGate
from livechat.reactions_redis import RedisReactions
from presence.backend_redis import SHARDS, RedisPresence
from server import redis_client
from tests.conftest import REDIS_CLUSTER_URL, REDIS_URL
from tests.helpers import ROOT
from watching.counts_redis import RedisCounts

pytestmark = pytest.mark.backends("redis", "cluster")


@pytest.fixture
async def redis(backend: str) -> AsyncIterator[Any]:
    cluster = backend == "cluster"
    client = redis_client.connect(REDIS_CLUSTER_URL if cluster else REDIS_URL, cluster=cluster)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Any) -> AsyncIterator[str]:
    """This test's key prefix; its keys are deleted afterwards (the Redis servers are shared)."""
    p = f"tb{uuid.uuid4().hex[:10]}"
    yield p
    keys = [k async for k in redis.scan_iter(match=f"*{p}*", count=1000)]
    if keys:
        await redis.delete(*keys)


async def keys_naming(redis: Any, prefix: str, needle: str) -> list[str]:
    """Keys of `prefix` (on every primary of a cluster) whose name or content holds `needle`."""
    found = []
    async for key in redis.scan_iter(match=f"*{prefix}*", count=1000):
        kind = await redis.type(key)
        values: list[Any] = [key]
        if kind == "string":
            values.append(await redis.get(key))
        elif kind == "hash":
            values += [*(await redis.hgetall(key)).items()]
        elif kind == "set":
            values += list(await redis.smembers(key))
        elif kind == "zset":
            values += await redis.zrange(key, 0, -1)
        if any(needle in str(v) for v in values):
            found.append(key)
    return found


async def on_every_primary(redis: Any, prefix: str, keys: list[str] | None = None) -> None:
    """On the cluster: the test's keys (or `keys`) sit on every primary, so it ran its scripts
    and transactions on each."""
    if not isinstance(redis, RedisCluster):
        return
    if keys is None:
        keys = [k async for k in redis.scan_iter(match=f"*{prefix}*", count=1000)]
    nodes = {redis.get_node_from_key(k) for k in keys}
    assert nodes == set(redis.get_primaries())


# -- presence ---------------------------------------------------------------------------------


async def test_presence_devices_settle_once_after_the_last_leaves(redis: Any, prefix: str) -> None:
    p = RedisPresence(redis, prefix)
    assert await p.touch("ana", "phone", 30) is True  # online: to announce
    assert await p.touch("ana", "laptop", 30) is False  # a second device: no news
    assert await p.touch("ana", "phone", 30) is False  # a refresh
    await p.leave("ana", "phone")
    assert await p.settle("ana") is False  # the laptop is still there
    await p.leave("ana", "laptop")
    assert await p.settle("ana") is True  # offline: to announce, once
    assert await p.settle("ana") is False
    (ana,) = await p.statuses(["ana"])
    assert not ana.online and ana.last_seen is not None and ana.last_seen > time.time() - 30
    # a quick reconnect before the settle (the grace) is no change, and no flap after it
    assert await p.touch("ana", "phone", 30) is True
    await p.leave("ana", "phone")
    assert await p.touch("ana", "phone2", 30) is False
    assert await p.settle("ana") is False


async def test_presence_statuses_of_users_on_every_shard(redis: Any, prefix: str) -> None:
    p = RedisPresence(redis, prefix)
    users = [f"user-{i}" for i in range(8 * SHARDS)]
    online, shy, never = users[::2], users[1], users[3]
    for u in online:
        await p.touch(u, "d", 30)
    await p.touch(shy, "d", 30)
    await p.set_invisible(shy, True)
    assert await p.invisible(shy) and not await p.invisible(users[0])
    await on_every_primary(redis, prefix)
    got = {s.user_id: s for s in await p.statuses(users)}
    assert [s.user_id for s in await p.statuses(users)] == users  # in the order asked
    assert {u for u, s in got.items() if s.online} == set(online)
    assert got[shy].last_seen is None and not got[shy].online  # invisible: offline, never seen
    assert got[never].last_seen is None
    assert all(got[u].last_seen for u in online)
    await p.set_invisible(shy, False)
    (back,) = await p.statuses([shy])
    assert back.online and back.last_seen
    assert await p.statuses([]) == []


async def test_presence_expire_tells_each_dead_nodes_user_offline_once(
    redis: Any, prefix: str
) -> None:
    """Devices whose node stopped refreshing them (a ttl already past stands for a killed node)
    are swept on every shard; a user with a live device elsewhere stays online, a user who left
    cleanly is the settle's (after the grace), not the sweep's."""
    p = RedisPresence(redis, prefix)
    dead = [f"dead-{i}" for i in range(4 * SHARDS)] + ["pipe|user"]
    for u in dead:
        assert await p.touch(u, "sid-on-the-dead-node", 30) is True
        await p.touch(u, "sid-on-the-dead-node", -1)
    await p.touch("both", "sid-on-the-dead-node", 30)
    await p.touch("both", "sid-alive", 30)
    await p.touch("both", "sid-on-the-dead-node", -1)
    await p.touch("leaver", "sid", 30)
    await p.leave("leaver", "sid")
    await on_every_primary(redis, prefix)
    assert sorted(await p.expire()) == sorted(dead)
    assert await p.expire() == []
    statuses = {s.user_id: s for s in await p.statuses([*dead, "both", "leaver"])}
    assert not any(statuses[u].online for u in dead)
    assert all(statuses[u].last_seen for u in dead)
    assert statuses["both"].online
    assert await p.settle("leaver") is True
    assert await p.touch(dead[0], "new-sid", 30) is True  # back: announced online again


async def test_presence_forget_leaves_nothing_of_the_user(redis: Any, prefix: str) -> None:
    p = RedisPresence(redis, prefix)
    for user in ("a|*[x]", "keeper"):
        await p.touch(user, "old", -1)  # expired, still in the shard's expiry set
        await p.touch(user, "new", 30)  # drops "old" from the user's devices
        await p.set_invisible(user, True)
    assert await keys_naming(redis, prefix, "a|*[x]")
    assert await p.forget("a|*[x]") == 2  # both devices left the expiry set
    assert await keys_naming(redis, prefix, "a|*[x]") == []
    assert await p.invisible("keeper")
    assert await p.expire() == []  # keeper's "old" device: swept, keeper still online
    await p.set_invisible("keeper", False)
    (keeper,) = await p.statuses(["keeper"])
    assert keeper.online and keeper.last_seen


async def test_presence_keeps_invisibility_and_last_seen_of_the_layout_before_shards(
    redis: Any, prefix: str
) -> None:
    """A Redis an earlier version used: one set, hash and sorted set for everyone."""
    old = f"{prefix}:pres:"
    seen_ms = int(time.time() * 1000) - 86_400_000
    await redis.sadd(old + "inv", "shy")
    await redis.hset(old + "seen", mapping={"shy": seen_ms, "ana": seen_ms})
    await redis.hset(old + "on", "ana", "1")
    await redis.zadd(old + "all", {"ana|sid": seen_ms + 60_000})
    await redis.zadd(old + "dev:ana", {"sid": seen_ms + 60_000})
    p = RedisPresence(redis, prefix)
    shy, ana = await p.statuses(["shy", "ana"])
    assert shy.last_seen is None and not shy.online and await p.invisible("shy")
    assert ana.last_seen == seen_ms / 1000 and not ana.online
    assert [k async for k in redis.scan_iter(match=old + "[^{]*", count=1000)] == []
    assert await p.touch("ana", "sid", 30) is True
    await p.set_invisible("shy", False)
    (shy,) = await p.statuses(["shy"])
    assert shy.last_seen == seen_ms / 1000


# -- watching counts --------------------------------------------------------------------------


async def test_counts_sum_the_nodes_and_counters_bump(redis: Any, prefix: str) -> None:
    c = RedisCounts(redis, prefix)
    rooms = [f"live:{i}" for i in range(30)]
    await c.publish_local("node-a", dict.fromkeys(rooms, 2))
    await c.publish_local("node-b", {rooms[0]: 3, rooms[1]: 1})
    totals = await c.totals(rooms)
    assert totals[rooms[0]] == 5 and totals[rooms[1]] == 3 and totals[rooms[2]] == 2
    await c.publish_local("node-a", {rooms[0]: 0})  # node-a's last socket left the room
    assert (await c.totals([rooms[0], "live:nobody"])) == {rooms[0]: 3, "live:nobody": 0}
    assert await c.totals([]) == {}
    contents = [f"c{i}" for i in range(30)]
    for cid in contents:
        await c.bump(cid, "views", 2)
        await c.bump(cid, "tips", 1.5)
    await on_every_primary(redis, prefix)
    got = await c.counters_of([*contents, "never"])
    assert set(got) == set(contents)
    assert got["c0"] == {"views": 2.0, "tips": 1.5, "reactions": 0.0, "v": 2.0}


# -- live chat: the gate and reactions --------------------------------------------------------


async def test_gate_decides_slow_mode_bans_timeouts_and_state(redis: Any, prefix: str) -> None:
    g = RedisGate(redis, prefix)
    assert await g.admit("lv", "u1", take_slot=True) is None  # no copy: fill first
    assert await g.admit_many("lv", ["u1"], take_slot=True) is None
    gen = await g.generation("lv")
    far = int(time.time() * 1000) + 3_600_000
    await g.fill("lv", gen, Snapshot("live", "host", 60, frozenset({"bad"}), {"muted": far}))
    first = await g.admit("lv", "u1", take_slot=True)
    assert first is not None and first.outcome == "ok" and first.stamp
    again = await g.admit("lv", "u1", take_slot=True)
    assert again is not None and again.outcome == "slow" and 0 < again.retry_after <= 60
    no_slot = await g.admit("lv", "u1", take_slot=False)
    assert no_slot is not None and no_slot.outcome == "ok"
    banned = await g.admit("lv", "bad", take_slot=True)
    muted = await g.admit("lv", "muted", take_slot=True)
    assert banned is not None and banned.outcome == "banned"
    assert muted is not None and muted.outcome == "timeout" and muted.retry_after > 3000
    run = await g.admit_many("lv", ["u2", "u2", "bad", "muted"], take_slot=True)
    assert run is not None
    assert [v.outcome for v in run] == ["ok", "slow", "banned", "timeout"]
    assert run[0].stamp is not None
    await g.give_back("lv", "u2", run[0].stamp)  # the send was a retry: the mark goes back
    retry = await g.admit("lv", "u2", take_slot=True)
    assert retry is not None and retry.outcome == "ok"
    await g.give_back("lv", "u1", "not-its-stamp")  # someone else's mark stays
    later = await g.admit("lv", "u1", take_slot=True)
    assert later is not None and later.outcome == "slow"
    # a change drops the copy; a fill read before the change is refused
    await g.invalidate("lv")
    assert await g.generation("lv") == gen + 1
    assert await g.admit("lv", "u1", take_slot=True) is None
    await g.fill("lv", gen, Snapshot("live", "host", 0))
    assert await g.admit("lv", "u1", take_slot=True) is None
    await g.fill("lv", gen + 1, Snapshot("ended", "host", 0))
    ended = await g.admit("lv", "u1", take_slot=True)
    assert ended is not None and ended.outcome == "ended"
    await g.invalidate("lv")
    await g.fill("lv", gen + 2, Snapshot("none", None, 0))
    run = await g.admit_many("lv", ["u1"], take_slot=False)
    assert run is not None and [v.outcome for v in run] == ["none"]


async def test_gate_forgets_a_users_marks_in_every_live(redis: Any, prefix: str) -> None:
    g = RedisGate(redis, prefix)
    lives = [f"lv{i}" for i in range(40)]
    for live in lives:
        await g.fill(live, 0, Snapshot("live", "host", 60))
        for user in ("gone", "stays", "*"):
            verdict = await g.admit(live, user, take_slot=True)
            assert verdict is not None and verdict.outcome == "ok"
    await on_every_primary(redis, prefix)
    assert await g.forget_user("gone") == len(lives)
    assert await keys_naming(redis, prefix, "gone") == []
    assert await g.forget_user("*") == len(lives)  # a pattern character is only itself
    assert len(await keys_naming(redis, prefix, "last:stays")) == len(lives)


async def test_reactions_of_two_processes_are_flushed_once_per_live(
    redis: Any, prefix: str
) -> None:
    flushed: dict[str, int] = {}

    async def flush(live_id: str, counts: dict[str, int]) -> None:
        flushed[live_id] = flushed.get(live_id, 0) + sum(counts.values())

    processes = [RedisReactions(redis, prefix, flush, interval=0.05) for _ in range(2)]
    lives = [f"lv{i}" for i in range(20)]
    try:
        for _ in range(5):
            for live in lives:
                for proc in processes:
                    await proc.add(live, "heart")
                    await proc.add(live, "fire")
            await asyncio.sleep(0.06)
        await on_every_primary(redis, prefix, [f"{prefix}:react:{{{lv}}}:counts" for lv in lives])
        deadline = time.monotonic() + 10
        while flushed != dict.fromkeys(lives, 20) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert flushed == dict.fromkeys(lives, 20)  # every reaction, none twice
    finally:
        for proc in processes:
            await proc.close()


# -- the bot's send limiter -------------------------------------------------------------------


async def test_limiter_keeps_the_window_and_the_chat_interval_across_processes(
    redis: Any, prefix: str
) -> None:
    a, b = (
        RedisLimiter(redis, f"{prefix}:tg:42", per_window=3, window=60, chat_interval=60, lease=5)
        for _ in range(2)
    )
    first = await a.acquire(1)
    assert first.granted and first.token
    busy = await b.acquire(1)  # in flight on the other process
    assert not busy.granted and busy.scope == "chat"
    two, three = await b.acquire(2), await a.acquire(3)
    assert two.granted and three.granted
    full = await b.acquire(4)
    assert not full.granted and full.scope == "global"
    await a.release(1, first.token)  # answered: chat 1 waits its interval, the slot its window
    cooling = await b.acquire(1)
    assert not cooling.granted and cooling.scope == "chat" and 0 < cooling.wait <= 60
    await b.release(2, two.token, used=False)  # never went out: chat and slot free at once
    again = await a.acquire(2)
    assert again.granted
    full = await b.acquire(5)
    assert not full.granted and full.scope == "global" and 0 < full.wait <= 60
    await a.release(3, three.token, retry_after=30)  # a 429: the chat waits its retry_after
    await a.release(2, again.token)
    assert await b.forget_chat(3) == 1
    assert await b.forget_chat(3) == 0
    keys = [k async for k in redis.scan_iter(match=f"*{prefix}*", count=1000)]
    assert keys and all(k.startswith(f"{{{prefix}:tg:42}}:") for k in keys)  # one slot


# -- a primary failing over -------------------------------------------------------------------


def free_cluster_base() -> int:
    """Six consecutive free ports whose cluster bus ports (+10000) are free too."""
    for _ in range(50):
        base = random.randrange(21000, 25000)
        try:
            for port in [p + bus for p in range(base, base + 6) for bus in (0, 10000)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for a cluster")


@pytest.fixture
def own_cluster() -> Iterator[str]:
    """A Redis Cluster of this test's own (three primaries with a replica each), to fail over."""
    env = {**os.environ, "OURS_CLUSTER_PORT": str(free_cluster_base())}
    script = os.path.join(ROOT, "scripts", "redis-cluster")
    out = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    try:
        yield out.stdout.split()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60)


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def replica_in_sync(node: Redis) -> bool:
    return bool((await node.info("replication")).get("master_link_status") == "up")


async def is_primary(node: Redis) -> bool:
    return bool((await node.info("replication"))["role"] == "master")


async def fail_over_every_primary(url: str) -> None:
    """Each primary's replica takes over (CLUSTER FAILOVER: the replica first catches up)."""
    seed = Redis.from_url(url, decode_responses=True)
    try:
        nodes = await seed.execute_command("CLUSTER NODES")
    finally:
        await seed.aclose()
    ids = {n["node_id"]: addr for addr, n in nodes.items()}
    replicas = [addr for addr, n in nodes.items() if "slave" in n["flags"]]
    assert len(replicas) == 3 and all(nodes[a]["master_id"] in ids for a in replicas)
    for addr in replicas:
        await fail_over(addr)


async def fail_over(replica: str) -> None:
    """`replica` takes over from its primary, once it has caught up."""
    host, port = replica.rsplit(":", 1)
    direct = Redis(host=host, port=int(port), decode_responses=True)
    try:
        await until(lambda: replica_in_sync(direct), f"{replica} in sync with its primary")
        for _ in range(3):  # a manual failover that did not finish in 5 s is given up
            await direct.execute_command("CLUSTER FAILOVER")
            with contextlib.suppress(TimeoutError):
                await until(lambda: is_primary(direct), f"{replica} took over", timeout=8)
                break
        assert await is_primary(direct), f"{replica} did not take over"
    finally:
        await direct.aclose()


async def test_every_backend_keeps_its_state_across_primaries_failing_over(
    own_cluster: str,
) -> None:
    redis = redis_client.connect(own_cluster, cluster=True)
    flushed: dict[str, int] = {}

    async def flush(live_id: str, counts: dict[str, int]) -> None:
        flushed[live_id] = flushed.get(live_id, 0) + sum(counts.values())

    reactions = RedisReactions(redis, "fo", flush, interval=0.05)
    try:
        presence, gate = RedisPresence(redis, "fo"), RedisGate(redis, "fo")
        counts, limiter = RedisCounts(redis, "fo"), RedisLimiter(redis, "fo:tg:1", lease=60)
        users, lives = [f"u{i}" for i in range(20)], [f"lv{i}" for i in range(20)]
        for u in users:
            assert await presence.touch(u, "sid", 30)
        for live in lives:
            await gate.fill(live, 0, Snapshot("live", "host", 600))
            first = await gate.admit(live, "fan", take_slot=True)
            assert first is not None and first.outcome == "ok"
        await counts.bump("c1", "views", 3)
        assert (await limiter.acquire(7)).granted
        await on_every_primary(redis, "fo")

        await fail_over_every_primary(own_cluster)

        assert all(s.online for s in await presence.statuses(users))
        assert not any([await presence.touch(u, "sid2", 30) for u in users])  # still announced
        assert await presence.expire() == []
        for live in lives:
            verdict = await gate.admit(live, "fan", take_slot=True)
            assert verdict is not None and verdict.outcome == "slow"
        assert (await counts.counters_of(["c1"]))["c1"]["views"] == 3
        busy = await limiter.acquire(7)
        assert not busy.granted and busy.scope == "chat"
        for live in lives:
            await reactions.add(live, "heart")
        deadline = time.monotonic() + 10
        while flushed != dict.fromkeys(lives, 1) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert flushed == dict.fromkeys(lives, 1)
    finally:
        await reactions.close()
        await redis.aclose()
