"""The core's Redis parts on a Redis Cluster, built directly (no server): the bus's keys sit
where docs/architecture.md's key layout says (the stream's in its slot, the done markers spread),
a primary failing over mid-stream is survived — publishes refused meanwhile are answered
`unavailable`, every event accepted reaches each group, the exclusive one in order, and the
status shows Redis up again with the failed primary's row down — and the cluster client serves
a burst past the single server's pool size."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from server import cluster, errors, redis_client
from server.bus_redis import RedisBus
from server.events import Event, build_event
from tests.conftest import REDIS_CLUSTER_URL, make_settings
from tests.outages import OwnCluster


@pytest.fixture
def own_cluster() -> Iterator[OwnCluster]:
    cluster = OwnCluster(7321)  # six ports from there; the shared cluster is on 7101
    yield cluster
    cluster.stop()


def ev(n: int) -> Event:
    return build_event(
        {"type": "content.liked", "subjects": [f"content:{n}"], "payload": {"content_id": str(n)}}
    )


async def until(cond: Any, timeout: float = 20) -> None:
    """Wait for `cond()` (a value or an awaitable) to be true."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_the_bus_keys_sit_where_the_layout_says(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bus = RedisBus(
        REDIS_CLUSTER_URL,
        stream=settings.bus_stream,
        cluster=True,
        max_deliveries=1,
        block_ms=200,
    )
    events = [ev(i) for i in range(20)]
    poisoned = events[7].id
    handled: dict[str, list[str]] = {"a": [], "x": []}

    async def a(e: Event) -> None:
        if e.id == poisoned:
            raise ValueError("poisoned")
        handled["a"].append(e.id)

    async def x(e: Event) -> None:
        handled["x"].append(e.id)

    bus.subscribe("a", a)
    bus.subscribe("x", x, exclusive=True)
    try:
        await bus.start()
        for e in events:
            assert await bus.publish(e)
        await until(lambda: len(handled["a"]) == 19 and len(handled["x"]) == 20)
        assert [d["event"]["id"] for d in await bus.dead_letters()] == [poisoned]
        keys = [k async for k in bus.redis.scan_iter(match=f"*{settings.redis_prefix}*")]
    finally:
        await bus.close()
    stream = settings.bus_stream
    done = [k for k in keys if k.startswith(f"{stream}:done:")]
    own = sorted(k for k in keys if k not in done)
    tag = redis_client.tag(stream)
    assert own == sorted(
        [stream, f"{tag}:dlq", f"{tag}:attempts:a", f"{tag}:lease:x"]
        + [f"{tag}:pub:{e.id}" for e in events]
    )
    assert {key_slot(k.encode()) for k in own} == {key_slot(stream.encode())}
    assert sorted(done) == sorted(
        [f"{stream}:done:a:{{{i}}}" for i in handled["a"]]
        + [f"{stream}:done:x:{{{i}}}" for i in handled["x"]]
    )
    assert len({key_slot(k.encode()) for k in done}) > 1  # spread by event


async def test_a_primary_failing_over_mid_stream_loses_nothing(
    own_cluster: OwnCluster, tmp_path: Path
) -> None:
    """The primary of the bus's slot stops mid-stream; its replica takes over. Publishes meanwhile
    fail as `unavailable` (what a client is told, with Retry-After) and are sent again; every
    event accepted reaches both groups (a consumer whose bookkeeping failed mid-batch goes on
    reading), and the exclusive group's first deliveries keep the publish order."""
    settings = make_settings(tmp_path)
    bus = RedisBus(
        own_cluster.start(),
        stream=settings.bus_stream,
        cluster=True,
        visibility_timeout_ms=500,
        block_ms=200,
    )
    handled: dict[str, list[str]] = {"shared": [], "ordered": []}

    async def shared(e: Event) -> None:
        handled["shared"].append(e.id)

    async def ordered(e: Event) -> None:
        handled["ordered"].append(e.id)

    bus.subscribe("shared", shared)
    bus.subscribe("ordered", ordered, exclusive=True)
    refused: list[BaseException] = []
    accepted: list[str] = []
    try:
        await bus.start()
        await bus.redis.initialize()
        primary = bus.redis.nodes_manager.get_node_from_slot(key_slot(bus.stream.encode()))
        for i in range(60):
            if i == 20:  # the replica is promoted after the cluster's node timeout (2 s)
                own_cluster.shutdown(primary.name)
            e = ev(i)
            while True:
                try:
                    await bus.publish(e)
                    break
                except Exception as exc:
                    refused.append(exc)
                    assert len(refused) < 500, refused[-1]
                    await asyncio.sleep(0.05)
            accepted.append(e.id)
        await until(
            lambda: (
                set(handled["shared"]) == set(accepted) and set(handled["ordered"]) == set(accepted)
            ),
            timeout=30,
        )
        assert refused, "the publishes went on as if nothing failed"
        assert all(errors.dependency_down(exc) is not None for exc in refused), refused
        assert list(dict.fromkeys(handled["ordered"])) == accepted

        async def settled() -> bool:
            groups = await bus.groups()
            return all(groups[g]["pending"] == 0 for g in handled)

        await until(settled)  # every entry acknowledged, none left to redeliver

        status: dict[str, Any] = {}

        async def served_again() -> bool:
            status.update(await cluster.redis_check(bus.redis, cluster=True))
            return bool(status["ok"])

        # the status says Redis is up again: the failed primary serves no slot any more
        await until(served_again)
        rows = {n["node"]: n for n in status["nodes"]}
        assert not rows[primary.name]["ok"] and rows[primary.name]["slots"] == 0
    finally:
        await bus.close()


async def test_a_burst_past_the_single_servers_pool_is_served_on_a_cluster() -> None:
    """A single Redis's pool makes a burst wait for connections; the cluster client has no such
    pool and fails a command past its cap on a node: the cap leaves room for a burst of slow
    commands four times the single server's pool, all on one node."""
    redis = redis_client.connect(REDIS_CLUSTER_URL, cluster=True)
    try:
        key = "test:burst:" + redis_client.tag(uuid.uuid4().hex)  # BLPOP creates no key
        got = await asyncio.gather(*(redis.blpop([key], timeout=0.2) for _ in range(4 * 64)))
    finally:
        await redis.aclose()
    assert got == [None] * (4 * 64)
