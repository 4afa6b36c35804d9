"""PostgreSQL restarted mid-stream, on a PostgreSQL this test starts itself (pgserver, never
the machine's shared one), on both bus backends: while it is down every publish is answered
503 `unavailable` within 10 s on the in-process bus (on Redis publishing goes on; never a
500), a socket event that needs the database gets an error ack with that code on a connection
that stays, `/health` stays up and `/ready` names the storage; when it is back every event
answered 202 reaches every connected official JS client once, and the same connections work
again, without restarting a node. A consumer whose handler needs the database waits for it:
nothing is dead-lettered or dropped for an outage, nothing handled twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from server.bus import Bus
from server.bus_memory import MemoryBus
from server.bus_redis import RedisBus
from server.events import Event, build_event
from server.storage import Storage
from tests import jsclient
from tests.conftest import REDIS_URL, free_port, make_settings
from tests.helpers import connect, start_server
from tests.outages import OwnPostgres, SteadyPublisher, assert_every_client_got, js_listeners


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    own = await asyncio.to_thread(OwnPostgres, tmp_path / "pg-own")
    yield own
    await asyncio.to_thread(own.close)


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_postgres_restarted_mid_stream_loses_nothing(
    tmp_path: Path, postgres: OwnPostgres, backend: str
) -> None:
    redis = {"redis_url": REDIS_URL} if backend == "redis" else {}
    settings = make_settings(tmp_path / "node", database_url=postgres.dsn, **redis)
    # on Redis two nodes share the bus; the in-process bus is one node's
    nodes = [await start_server(settings, free_port()) for _ in range(2 if redis else 1)]
    publisher = SteadyPublisher(nodes)
    member = await connect(nodes[0].url, "/messages", nodes[0].token("member"))
    try:
        async with jsclient.JsClients() as js:
            clients = await js_listeners(js, nodes)
            publisher.start()
            await asyncio.sleep(1.0)

            await asyncio.to_thread(postgres.kill)
            async with aiohttp.ClientSession() as http:
                async with http.get(nodes[0].url + "/health") as r:
                    assert r.status == 200
                async with http.get(nodes[0].url + "/ready") as r:
                    ready = await r.json()
                    assert r.status == 503 and ready["data"]["checks"]["storage"] is False, ready
            ack = await member.call("conversation:list", {})
            assert ack["error"]["code"] == "unavailable", ack
            await asyncio.sleep(1.5)

            await asyncio.to_thread(postgres.start)
            await asyncio.sleep(3.0)
            await publisher.stop()

            # the in-process bus makes an event durable in PostgreSQL (503 while it is away);
            # Redis Streams do not need it, and publishing goes on through the outage
            publisher.assert_no_500s(outage_seen=not redis)
            wanted = publisher.accepted()
            assert len(wanted) > 20
            await assert_every_client_got(js, clients, wanted)
            # the same socket works again
            assert (await member.call("conversation:list", {}))["ok"]
    finally:
        await member.close()
        for node in nodes:
            await node.stop()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_handler_that_needs_the_database_waits_for_it(
    tmp_path: Path, postgres: OwnPostgres, backend: str
) -> None:
    """The database goes away while a consumer handles an event and stays away longer than
    all its delivery attempts take: the event is not dead-lettered (nor dropped), it is handled
    once the database is back, and recorded as done (a restarted bus does not handle it
    again)."""
    settings = make_settings(
        tmp_path, database_url=postgres.dsn, redis_url=REDIS_URL if backend == "redis" else None
    )
    storage = Storage(settings)
    await storage.open(migrate=True)

    def bus() -> Bus:
        if settings.redis_url:
            return RedisBus(
                settings.redis_url,
                stream=settings.bus_stream,
                visibility_timeout_ms=300,
                max_deliveries=3,
                block_ms=200,
            )
        return MemoryBus(storage, max_deliveries=3)

    entered, gate = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def needs_the_database(e: Event) -> None:
        entered.set()
        await gate.wait()
        await storage.db.fetchval("SELECT 1")
        handled.append(e.id)

    first = bus()
    first.subscribe("work", needs_the_database)
    await first.start()
    event = build_event(
        {"type": "content.liked", "subjects": ["content:1"], "payload": {"content_id": "1"}}
    )
    try:
        assert await first.publish(event)
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.to_thread(postgres.kill)
        gate.set()
        await asyncio.sleep(4)  # longer than three attempts with their backoff take
        assert handled == []
        await asyncio.to_thread(postgres.start)
        deadline = time.monotonic() + 10
        while handled != [event.id]:
            assert time.monotonic() < deadline, "not handled after the database came back"
            await asyncio.sleep(0.05)
        assert await first.dead_letter_count() == 0
        await asyncio.sleep(0.5)  # the done marker is written
    finally:
        await first.close()

    again: list[str] = []

    async def record(e: Event) -> None:
        again.append(e.id)

    second = bus()
    second.subscribe("work", record)
    await second.start()
    await asyncio.sleep(1.0)
    await second.close()
    await storage.close()
    assert again == [], "handled again after a restart: it was never recorded as done"
