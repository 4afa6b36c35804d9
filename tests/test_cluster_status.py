"""The cluster at a glance: two real `ours serve` processes on Redis report themselves with a
heartbeat; `ours status` (text and `--json`) and `GET /v1/admin/cluster` show both, then the
survivor alone up once the other is killed (kill -9: no goodbye) and its row goes stale; a node
stopped with SIGTERM says `stopped`. `ours worker` on the embedded default explains itself in
one line and exits 78 (EX_CONFIG: not to be restarted). On a Redis Cluster the Redis check is
per node: a replica down is shown, a primary down with no replica to promote is Redis down."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from server import cluster, jsonutil, redis_client
from tests.conftest import REDIS_CLUSTER_URL, REDIS_URL, PgCluster, free_port, make_settings
from tests.helpers import ROOT, ServerHandle, connect, settings_env, spawn_server, stop_process
from tests.outages import OwnCluster

HEARTBEAT_S = 0.5  # gone after max(5 s, 3 heartbeats)


def ours_status(node: ServerHandle, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "status", "--url", node.url, *extra],
        cwd=ROOT,
        env=settings_env(node.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_json(node: ServerHandle) -> dict[str, Any]:
    done = ours_status(node, "--json")
    assert done.returncode == 0, done.stderr
    return dict(jsonutil.loads(done.stdout))


def by_url(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["url"]: n for n in doc["nodes"]}


async def until(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.3)


async def two_nodes(tmp_path: Path, pg: PgCluster) -> tuple[ServerHandle, ServerHandle]:
    """Two `ours serve` processes on Redis sharing a fresh database, beating every 0.5 s."""
    settings = make_settings(
        tmp_path, redis_url=REDIS_URL, database_url=await pg.fresh(), node_heartbeat_s=HEARTBEAT_S
    )
    return await spawn_server(settings, free_port()), await spawn_server(settings, free_port())


async def test_ours_status_shows_both_nodes_then_the_survivor(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    a, b = await two_nodes(tmp_path, pg_clusters["machine"])
    try:
        # a socket on B shows in B's row and the totals, whichever node is asked
        async with aiohttp.ClientSession() as http:
            async with http.get(
                a.url + "/v1/admin/cluster",
                headers={"Authorization": f"Bearer {a.token('u1')}"},
            ) as r:
                assert r.status == 403  # a user token is not enough
        client = await connect(b.url, "/feed", b.token("viewer"))
        assert (await client.call("room:join", {"room": "zone:music"}))["ok"]

        def both_up() -> dict[str, Any] | None:
            doc = status_json(a)
            nodes = by_url(doc)
            ok = (
                {a.url, b.url} <= set(nodes)
                and all(nodes[u]["state"] == "up" for u in (a.url, b.url))
                and nodes[b.url]["stats"]["connections"].get("/feed") == 1
            )
            return doc if ok else None

        doc = await until(both_up)
        nodes = by_url(doc)
        assert nodes[a.url]["self"] and not nodes[b.url]["self"]
        assert nodes[b.url]["stats"]["rooms"] >= 1 and nodes[b.url]["role"] == "serve"
        assert doc["totals"]["nodes_up"] == 2 and doc["totals"]["connections"]["/feed"] == 1
        assert doc["redis"]["ok"] and doc["postgres"]["ok"] and not doc["postgres"]["embedded"]
        assert doc["bus"]["backend"] == "redis" and "fanout" in doc["bus"]["groups"]
        assert set(doc["bus"]["groups"]["fanout"]) == {"lag", "pending"}
        assert set(doc["scheduler"]) == {"due", "running", "scheduled", "failed"}

        text = ours_status(a)
        assert text.returncode == 0, text.stderr
        assert "nodes: 2 up, 0 gone" in text.stdout
        for n in (nodes[a.url], nodes[b.url]):
            assert n["id"] in text.stdout
        assert "redis: ok" in text.stdout and "fanout" in text.stdout
        await client.close()

        # B dies without a word: its row goes stale and it is shown gone; A is still up
        assert b.proc is not None
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)

        def b_gone() -> dict[str, Any] | None:
            doc = status_json(a)
            nodes = by_url(doc)
            return doc if nodes[b.url]["state"] == "gone" else None

        doc = await until(b_gone)
        nodes = by_url(doc)
        assert nodes[a.url]["state"] == "up"
        assert doc["totals"]["nodes_up"] == 1 and doc["totals"]["nodes_gone"] == 1
        text = ours_status(a)
        assert "nodes: 1 up, 1 gone" in text.stdout

        # A stopped cleanly says so; `ours status` then has no node to ask and says what to do
        assert a.proc is not None
        assert stop_process(a.proc) == 0
        done = ours_status(a)
        assert done.returncode == 1 and "is `ours serve` running there?" in done.stderr
    finally:
        await a.stop()
        await b.stop()


async def test_a_clean_stop_shows_as_stopped(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    a, b = await two_nodes(tmp_path, pg_clusters["machine"])
    try:
        assert b.proc is not None
        assert stop_process(b.proc) == 0
        doc = status_json(a)
        assert by_url(doc)[b.url]["state"] == "stopped"
        assert doc["totals"]["nodes_up"] == 1
    finally:
        await a.stop()
        await b.stop()


def test_ours_worker_on_the_embedded_default_explains_and_exits_78(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=settings_env(make_settings(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "OURS_REDIS_URL is not set" in lines[0], lines


async def test_redis_check_on_a_cluster_lists_every_node() -> None:
    """On a Redis Cluster the Redis check is per node, primaries first, and the cluster's own
    state; `ours status` prints a line per node under `redis cluster`."""
    redis = redis_client.connect(REDIS_CLUSTER_URL, cluster=True)
    try:
        doc = await cluster.redis_check(redis, cluster=True)
    finally:
        await redis.aclose()
    assert doc["used"] and doc["cluster"] and doc["ok"], doc
    roles = [n["role"] for n in doc["nodes"]]
    assert roles == ["primary"] * 3 + ["replica"] * 3
    assert all(n["ok"] for n in doc["nodes"])
    assert sum(n["slots"] for n in doc["nodes"]) == 16384
    text = cluster.render(status_with_redis(doc))
    assert "redis cluster: ok" in text
    for n in doc["nodes"]:
        assert f"  {n['node']} {n['role']} ({n['slots']} slots): ok" in text


def status_with_redis(redis: dict[str, Any]) -> dict[str, Any]:
    """A status document with nothing but `redis` to show."""
    totals = {"nodes_up": 0, "nodes_gone": 0, "connections_total": 0, "users": 0, "rooms": 0}
    return {
        "nodes": [],
        "totals": totals,
        "bus": {"backend": "redis", "groups": {}, "dead_letters": 0},
        "scheduler": {"due": 0, "running": 0, "scheduled": 0, "failed": 0},
        "postgres": {"embedded": True, "ok": True, "latency_ms": 1.0},
        "redis": redis,
    }


async def test_redis_check_on_a_cluster_tells_a_replica_down_from_a_primary_down() -> None:
    """A replica that stops shows on its row and leaves Redis up; its primary stopping too
    (nothing left to promote) makes Redis down."""
    own = OwnCluster(7311)  # six ports from there; the shared cluster is on 7101
    redis = redis_client.connect(own.start(), cluster=True)
    try:
        await redis.initialize()
        primary = redis.get_primaries()[0].name
        nodes = await redis.cluster_nodes()  # {address: {node_id, master_id, ...}}
        replica = next(a for a, n in nodes.items() if n["master_id"] == nodes[primary]["node_id"])
        own.shutdown(replica)

        async def replica_down() -> dict[str, Any] | None:
            doc = await cluster.redis_check(redis, cluster=True)
            rows = {n["node"]: n for n in doc["nodes"]}
            return doc if not rows[replica]["ok"] else None

        doc = await until_async(replica_down)
        assert doc["ok"], doc
        assert [n["node"] for n in doc["nodes"] if not n["ok"]] == [replica]
        assert f"  {replica} replica (0 slots): DOWN (" in cluster.render(status_with_redis(doc))

        own.shutdown(primary)

        async def redis_down() -> dict[str, Any] | None:
            doc = await cluster.redis_check(redis, cluster=True)
            return None if doc["ok"] else doc

        doc = await until_async(redis_down)
        assert "redis cluster: DOWN" in cluster.render(status_with_redis(doc))
    finally:
        await redis.aclose()
        own.stop()


async def until_async(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.3)
