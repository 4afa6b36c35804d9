"""The bus on every backend (in-process, Redis, Redis Cluster): durability, once-per-group
handling, redelivery after a crash, dead letters and `ours dlq list|replay`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from server.bus import Bus
from server.bus_memory import MemoryBus
from server.bus_redis import RedisBus
from server.events import Event, build_event
from server.storage import Storage
from tests.conftest import PgCluster, make_settings, redis_settings
from tests.helpers import ROOT, settings_env

pytestmark = pytest.mark.backends("memory", "redis", "cluster")


def ev(n: int = 0) -> Event:
    return build_event(
        {"type": "content.liked", "subjects": [f"content:{n}"], "payload": {"content_id": str(n)}}
    )


async def until(cond: Callable[[], Any], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


class Env:
    """Builds buses of one backend that share storage (and stream) within a test."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.buses: list[Bus] = []

    def bus(self, **kw: Any) -> Bus:
        s = self.settings
        b: Bus
        if s.redis_url:
            b = RedisBus(
                s.redis_url,
                stream=s.bus_stream,
                visibility_timeout_ms=kw.get("visibility_ms", 300),
                max_deliveries=kw.get("max_deliveries", 3),
                block_ms=200,
                cluster=s.redis_cluster,
            )
        else:
            b = MemoryBus(self.storage, max_deliveries=kw.get("max_deliveries", 3))
        self.buses.append(b)
        return b


@pytest.fixture
async def env(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> AsyncIterator[Env]:
    pg = pg_clusters["embedded" if backend == "memory" else "machine"]
    settings = make_settings(tmp_path, database_url=await pg.fresh(), **redis_settings(backend))
    storage = Storage(settings)
    await storage.open(migrate=False)
    e = Env(settings, storage)
    yield e
    for b in e.buses:
        await b.close()
    await storage.close()


async def test_each_group_handles_each_event_once_in_order(env: Env) -> None:
    bus = env.bus()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def a(e: Event) -> None:
        seen["a"].append(e.id)

    async def b(e: Event) -> None:
        seen["b"].append(e.id)

    bus.subscribe("a", a)
    bus.subscribe("b", b)
    await bus.start()
    events = [ev(i) for i in range(30)]
    for e in events:
        assert await bus.publish(e) is True
    assert await bus.publish(events[0]) is False  # same id: a no-op
    await until(lambda: len(seen["a"]) == 30 and len(seen["b"]) == 30)
    await asyncio.sleep(0.3)
    assert seen["a"] == seen["b"] == [e.id for e in events]


async def test_publish_is_durable_before_consumers_run(env: Env) -> None:
    """Published while no consumer runs (a crash before handling): handled at the next start."""
    first = env.bus()
    first.subscribe("g", _fail_always)
    await first.start(consume=False)  # creates the group, consumes nothing
    e = ev(1)
    assert await first.publish(e)
    await first.close()
    env.buses.remove(first)

    got: list[str] = []

    async def handler(x: Event) -> None:
        got.append(x.id)

    second = env.bus()
    second.subscribe("g", handler)
    await second.start()
    await until(lambda: got == [e.id])


async def _fail_always(e: Event) -> None:
    raise RuntimeError("poisoned")


async def test_poisoned_event_goes_to_dead_letters_and_cli_replays_it(env: Env) -> None:
    bus = env.bus(max_deliveries=3)
    healthy = False
    handled: list[str] = []
    attempts = 0

    async def handler(e: Event) -> None:
        nonlocal attempts
        attempts += 1
        if not healthy:
            raise ValueError("cannot handle this yet")
        handled.append(e.id)

    bus.subscribe("router", handler)
    await bus.start()
    bad, good = ev(1), ev(2)
    await bus.publish(bad)
    await until(lambda: bus.dead_letters(), timeout=15)
    dead = await bus.dead_letters()
    assert len(dead) == 1
    assert dead[0]["consumer"] == "router"
    assert dead[0]["event"]["id"] == bad.id
    assert "cannot handle this yet" in dead[0]["error"]
    assert attempts == 3

    # the CLI sees it in another process
    cli_env = settings_env(env.settings)
    out = subprocess.run(
        [sys.executable, "-m", "app", "dlq", "list"],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert bad.id in out.stdout

    healthy = True
    await bus.publish(good)
    await until(lambda: handled == [good.id])
    out = subprocess.run(
        [sys.executable, "-m", "app", "dlq", "replay"],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "replayed 1" in out.stdout
    await until(lambda: handled == [good.id, bad.id])
    assert await bus.dead_letters() == []
    await asyncio.sleep(0.5)
    assert handled == [good.id, bad.id]  # good was not handled again


@pytest.mark.parametrize("with_many", [False, True], ids=["one-by-one", "batch-handler"])
async def test_a_burst_is_handled_in_order_around_a_poisoned_event(
    env: Env, with_many: bool
) -> None:
    """Events that queue up while the consumer is busy are taken together (one query for
    which are done, one statement marking them): still each once and in order, the poisoned
    one retried in place and dead-lettered, and nothing handled again by the next consumer.
    With a batch handler, a batch it fails on is handled one by one instead."""
    bus = env.bus(max_deliveries=2)
    gate = asyncio.Event()
    handled: list[str] = []
    attempts: dict[str, int] = {}
    events = [ev(i) for i in range(40)]
    poisoned = events[17].id

    async def handler(e: Event) -> None:
        await gate.wait()
        attempts[e.id] = attempts.get(e.id, 0) + 1
        if e.id == poisoned:
            raise ValueError("poisoned")
        handled.append(e.id)

    batches: list[int] = []

    async def many(run: list[Event]) -> None:
        await gate.wait()
        batches.append(len(run))
        if any(e.id == poisoned for e in run):
            raise ValueError("poisoned batch")
        for e in run:
            attempts[e.id] = attempts.get(e.id, 0) + 1
            handled.append(e.id)

    bus.subscribe("g", handler, many=many if with_many else None)
    await bus.start()
    for e in events:
        assert await bus.publish(e)
    gate.set()
    await until(lambda: len(handled) == 39, timeout=15)
    await until(bus.dead_letters, timeout=15)
    assert handled == [e.id for e in events if e.id != poisoned]
    assert attempts[poisoned] == 2 and all(n == 1 for i, n in attempts.items() if i != poisoned)
    assert [d["event"]["id"] for d in await bus.dead_letters()] == [poisoned]
    if with_many:
        assert batches and max(batches) > 1  # it was given runs of events (and failed on one)
    await bus.close()
    env.buses.remove(bus)

    again: list[str] = []

    async def record(e: Event) -> None:
        again.append(e.id)

    second = env.bus()
    second.subscribe("g", record)
    await second.start()
    await asyncio.sleep(0.5)
    assert again == []


def redis_bus(backend: str, tmp_path: Path, **kw: Any) -> RedisBus:
    """A Redis bus of `backend` (redis or cluster) on a stream of its own."""
    settings = make_settings(tmp_path, **redis_settings(backend))
    assert settings.redis_url is not None
    return RedisBus(
        settings.redis_url, stream=settings.bus_stream, cluster=settings.redis_cluster, **kw
    )


@pytest.mark.backends("redis", "cluster")
@pytest.mark.parametrize("exclusive", [False, True], ids=["shared", "exclusive"])
async def test_consumer_killed_mid_event_is_redelivered_once(
    backend: str, exclusive: bool, tmp_path: Path
) -> None:
    """A consumer dies (kill -9) holding an event: a consumer of another process claims the
    dead one's pending entries (XAUTOCLAIM) and handles each once — for an exclusive group
    once the dead holder's lease lapses, in stream order."""
    publisher = redis_bus(backend, tmp_path)
    stream, cluster = publisher.stream, publisher.cluster
    url = redis_settings(backend)["redis_url"]
    mode = "exclusive" if exclusive else "shared"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bus_consumer_proc", url, stream, str(int(cluster)), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    survivor: RedisBus | None = None
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == "started"
        events = [ev(i) for i in range(3)]
        for e in events:
            assert await publisher.publish(e)
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        assert line.strip() == f"got {events[0].id}"
        proc.send_signal(signal.SIGKILL)  # dies holding the event, unacknowledged
        proc.wait(10)

        handled: list[str] = []

        async def handler(x: Event) -> None:
            handled.append(x.id)

        survivor = RedisBus(
            url, stream=stream, visibility_timeout_ms=300, block_ms=200, cluster=cluster
        )
        survivor.subscribe("work", handler, exclusive=exclusive)
        await survivor.start()
        await until(lambda: len(handled) >= 3, timeout=15)  # an exclusive lease lapses in 5 s
        await asyncio.sleep(1.0)  # more reclaim rounds: still once
        ids = [e.id for e in events]
        assert handled == ids if exclusive else sorted(handled) == sorted(ids)
        pending = await survivor.redis.xpending(stream, "work")
        assert pending["pending"] == 0
    finally:
        if survivor is not None:
            await survivor.close()
        await publisher.close()
        if proc.poll() is None:
            proc.kill()


@pytest.mark.backends("redis", "cluster")
async def test_unreadable_entry_is_dead_lettered(backend: str, tmp_path: Path) -> None:
    bus = redis_bus(backend, tmp_path, block_ms=200)
    got: list[Event] = []

    async def handler(e: Event) -> None:
        got.append(e)

    bus.subscribe("g", handler)
    await bus.start()
    await bus.redis.xadd(bus.stream, {"e": "{broken json"})
    await until(lambda: bus.dead_letters())
    dead = await bus.dead_letters()
    assert "unreadable" in dead[0]["error"]
    assert got == []
    await bus.close()


@pytest.mark.backends("redis", "cluster")
async def test_redis_publish_dedup_is_atomic_under_concurrency(
    backend: str, tmp_path: Path
) -> None:
    bus = redis_bus(backend, tmp_path)
    bus.subscribe("g", _fail_always)
    await bus.start(consume=False)
    e = ev(uuid.uuid4().int % 1000)
    results = await asyncio.gather(*(bus.publish(e) for _ in range(20)))
    assert results.count(True) == 1
    assert await bus.redis.xlen(bus.stream) == 1
    await bus.close()
