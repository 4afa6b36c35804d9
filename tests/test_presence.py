"""Presence on /presence: online while any device is connected or heart-beating, offline when
the last leaves (after a grace, so quick reconnects do not flap) or its node dies; invisible
users look offline; cluster-wide on Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import PgCluster, free_port, make_settings, redis_settings
from tests.helpers import Client, ServerHandle, connect, spawn_server, start_server

NS = "/presence"


def updates(c: Client, user: str) -> list[str]:
    return [u["status"] for u in c.received["presence:update"] if u["user_id"] == user]


async def test_online_offline_and_no_flap(server: ServerHandle) -> None:
    watcher = await connect(server.url, NS, server.token("watcher"))
    ack = await watcher.call("presence:subscribe", {"user_ids": ["ana", "bo"]})
    assert ack["ok"]
    assert {u["user_id"]: u["status"] for u in ack["data"]["users"]} == {
        "ana": "offline",
        "bo": "offline",
    }
    phone = await connect(server.url, NS, server.token("ana"))
    await watcher.wait_for("presence:update")
    assert updates(watcher, "ana") == ["online"]
    laptop = await connect(server.url, NS, server.token("ana"))  # a second device: no news
    await phone.close()  # one device left: still online
    await asyncio.sleep(server.settings.presence_grace_s + 0.5)
    assert updates(watcher, "ana") == ["online"]
    # a quick reconnect within the grace: no offline flap
    await laptop.close()
    laptop = await connect(server.url, NS, server.token("ana"))
    await asyncio.sleep(server.settings.presence_grace_s + 0.5)
    assert updates(watcher, "ana") == ["online"]
    await laptop.close()
    await watcher.wait_for("presence:update", 2, timeout=server.settings.presence_grace_s + 5)
    assert updates(watcher, "ana") == ["online", "offline"]
    (status,) = (await watcher.call("presence:query", {"user_ids": ["ana"]}))["data"]["users"]
    assert status["status"] == "offline" and status["last_seen"] > time.time() - 30
    await watcher.close()


async def test_invisible_looks_offline(server: ServerHandle) -> None:
    watcher = await connect(server.url, NS, server.token("w"))
    await watcher.call("presence:subscribe", {"user_ids": ["shy"]})
    shy = await connect(server.url, NS, server.token("shy"))
    await watcher.wait_for("presence:update")
    assert (await shy.call("presence:set", {"invisible": True}))["ok"]
    await watcher.wait_for("presence:update", 2)
    assert updates(watcher, "shy") == ["online", "offline"]
    (status,) = (await watcher.call("presence:query", {"user_ids": ["shy"]}))["data"]["users"]
    assert status == {"user_id": "shy", "status": "offline", "last_seen": None}
    assert (await shy.call("presence:heartbeat"))["ok"]
    await asyncio.sleep(0.3)
    assert updates(watcher, "shy") == ["online", "offline"]
    await shy.call("presence:set", {"invisible": False})
    await watcher.wait_for("presence:update", 3)
    assert updates(watcher, "shy")[-1] == "online"
    for c in (watcher, shy):
        await c.close()


async def test_bad_presence_input(server: ServerHandle) -> None:
    c = await connect(server.url, NS, server.token("u"))
    too_many = [f"u{i}" for i in range(501)]
    for event, data in [
        ("presence:subscribe", {"user_ids": too_many}),
        ("presence:subscribe", {"user_ids": []}),
        ("presence:subscribe", {"user_ids": ["bad id!"]}),
        ("presence:set", {"invisible": "yes please"}),
    ]:
        ack = await c.call(event, data)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
    assert (await c.call("presence:query", {"user_ids": ["u"]}))["data"]["users"][0][
        "status"
    ] == "online"
    await c.close()


async def test_heartbeats_keep_a_device_alive_and_missing_them_expires_it(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=await pg_clusters["embedded"].fresh(),
        presence_ttl_s=1.5,
        presence_refresh_s=600,
        presence_grace_s=0.2,
    )
    srv = await start_server(settings, free_port())
    try:
        watcher = await connect(srv.url, NS, srv.token("w"))
        await watcher.call("presence:subscribe", {"user_ids": ["hb"]})
        device = await connect(srv.url, NS, srv.token("hb"))
        await watcher.wait_for("presence:update")
        for _ in range(4):  # heart-beating: stays online past several ttls
            await asyncio.sleep(0.6)
            assert (await device.call("presence:heartbeat"))["ok"]
        assert updates(watcher, "hb") == ["online"]
        await watcher.wait_for("presence:update", 2, timeout=6)  # stops beating: expires
        assert updates(watcher, "hb") == ["online", "offline"]
        for c in (watcher, device):
            await c.close()
    finally:
        await srv.stop()


@pytest.mark.backends("redis")
async def test_cluster_wide_and_a_killed_process_goes_offline_within_65s(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    """With the production timings (ttl 60 s, refresh 15 s): a user on process A is online for
    a watcher on process B, and offline within 65 s after A is killed with SIGKILL."""
    settings = make_settings(
        tmp_path, **redis_settings(backend), database_url=await pg_clusters["machine"].fresh()
    )
    assert settings.presence_ttl_s == 60
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        watcher = await connect(b.url, NS, b.token("watcher"))
        await watcher.call("presence:subscribe", {"user_ids": ["ana"]})
        ana = await connect(a.url, NS, a.token("ana"))
        await watcher.wait_for("presence:update", timeout=10)
        assert updates(watcher, "ana") == ["online"]
        (s,) = (await watcher.call("presence:query", {"user_ids": ["ana"]}))["data"]["users"]
        assert s["status"] == "online"
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(10)
        a.proc = None
        await watcher.wait_for("presence:update", 2, timeout=70)
        assert updates(watcher, "ana") == ["online", "offline"]
        assert time.monotonic() - killed <= 65
        await ana.sio.disconnect()
        await watcher.close()
    finally:
        await a.stop()
        await b.stop()
