"""Slow consumers, backpressure and admission control on the fan-out fast path: a client that
stops reading is cut off with a reason (close code 1013) while the others in its room get
every event in order; while the sockets' backlog is above its bound, or fan-out delivers later
than its bound, a publish is refused at once with 503 + Retry-After, and once the backlog is
gone publishing and every connection work again."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from config import Settings
from server import metrics
from server.events import Event, build_event
from server.fanout import Fanout
from server.managers import LocalManager
from tests.conftest import free_port
from tests.helpers import ServerHandle, connect, start_server

ROOM = "zone:backpressure"


class StalledClient:
    """A Socket.IO client over a raw websocket that joins a room and then stops reading
    (a phone that went into a tunnel), with a small receive buffer so the kernel does not
    take much for it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def join(cls, port: int, namespace: str, token: str, room: str) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        c = cls(reader, writer)
        assert (await c.frame())[1].startswith(b"0{")  # engine.io open
        c.send(f"40{namespace},{json.dumps({'token': token})}")
        assert (await c.frame())[1].startswith(f"40{namespace},".encode())
        c.send(f'42{namespace},1["room:join",{{"room":"{room}"}}]')
        while True:  # skip whatever the server sends on connect until the join's ack
            _, data = await c.frame()
            if data.startswith(f"43{namespace},1".encode()):
                ack = json.loads(data[len(f"43{namespace},1") :])[0]
                assert ack["ok"] is True, ack
                return c

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (server frames are unmasked and final here)."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 10)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), 10)

    def close(self) -> None:
        self.writer.close()


def counter(c: Any, *labels: str) -> float:
    return float((c.labels(*labels) if labels else c)._value.get())


def content(i: int) -> dict[str, Any]:
    """~2.7 KB on the wire: the most a content.created payload holds."""
    return {
        "type": "content.created",
        "subjects": [ROOM],
        "payload": {
            "content_id": f"c{i}",
            "kind": "post",
            "title": "t" * 500,
            "url": "https://example.com/" + "u" * 2000,
        },
    }


@pytest.fixture
async def held_server(settings: Settings) -> AsyncIterator[ServerHandle]:
    handle = await start_server(
        settings.model_copy(update={"backpressure_wait_s": 0.5}), free_port()
    )
    yield handle
    await handle.stop()


async def test_a_client_that_stops_reading_is_cut_off_and_the_others_get_everything(
    held_server: ServerHandle,
) -> None:
    server = held_server
    reader = await connect(server.url, "/feed", server.token("reader"))
    assert (await reader.call("room:join", {"room": ROOM}))["ok"]
    stalled = await StalledClient.join(server.port, "/feed", server.token("stalled"), ROOM)
    slow_before = counter(metrics.SLOW_CONSUMERS, "websocket")
    holds_before = counter(metrics.FANOUT_HOLDS)

    sent = refused = 0
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {server.settings.api_keys[0]}"}

        async def publish_next() -> None:
            """Publish event `sent`, again after its Retry-After while it is refused."""
            nonlocal sent, refused
            while True:
                async with http.post(
                    server.url + "/v1/events", json=content(sent), headers=headers
                ) as r:
                    if r.status == 202:
                        sent += 1
                        return
                    assert r.status == 503, await r.text()
                    assert r.headers["Retry-After"] == "1"
                    refused += 1
                    assert refused < 10_000, "publishes stayed refused"
                await asyncio.sleep(0.01)  # a real publisher waits Retry-After; sooner here

        # publish until the stalled socket has been cut off (a few MiB at most), then a bit more
        while counter(metrics.SLOW_CONSUMERS, "websocket") == slow_before:
            assert sent < 5000, "the stalled client was never cut off"
            await publish_next()
        for _ in range(20):
            await publish_next()

    # the reader got every event, in order, and its connection still works
    got = await reader.wait_for("content.created", sent, timeout=60)
    assert [e["payload"]["content_id"] for e in got] == [f"c{i}" for i in range(sent)]
    assert (await reader.call("room:join", {"room": "zone:after"}))["ok"]
    # fan-out held back for it before cutting it off
    assert counter(metrics.FANOUT_HOLDS) > holds_before

    # the stalled client, reading at last: an in-order prefix of the events, then the close
    ids: list[str] = []
    while True:
        opcode, data = await stalled.frame()
        if opcode == 0x8:
            assert int.from_bytes(data[:2], "big") == 1013
            assert data[2:] == b"slow consumer"
            break
        if data.startswith(b'42/feed,["content.created"'):
            ids.append(json.loads(data[len(b"42/feed,") :])[1]["payload"]["content_id"])
    assert ids == [f"c{i}" for i in range(len(ids))]
    assert len(ids) < sent
    stalled.close()
    await reader.close()


@pytest.fixture
async def patient_server(settings: Settings) -> AsyncIterator[ServerHandle]:
    """A server whose fan-out holds for a stalled socket far longer than any test runs, so a
    backlog stays until the test ends it."""
    handle = await start_server(
        settings.model_copy(update={"backpressure_wait_s": 60}), free_port()
    )
    yield handle
    await handle.stop()


async def test_publish_is_refused_at_once_while_the_sockets_are_backed_up(
    patient_server: ServerHandle,
) -> None:
    server = patient_server
    reader = await connect(server.url, "/feed", server.token("reader"))
    assert (await reader.call("room:join", {"room": ROOM}))["ok"]
    stalled = await StalledClient.join(server.port, "/feed", server.token("stalled"), ROOM)
    refused_before = counter(metrics.EVENTS_REFUSED)
    slow_before = counter(metrics.SLOW_CONSUMERS, "websocket")
    headers = {"Authorization": f"Bearer {server.settings.api_keys[0]}"}
    accepted: list[str] = []
    async with aiohttp.ClientSession() as http:
        # induce the backlog: publish until the stalled socket's unsent bytes pass the bound
        # (its kernel buffers fill first: a few MiB), and the next publish is refused
        while True:
            assert len(accepted) < 5000, "never refused"
            async with http.post(
                server.url + "/v1/events", json=content(len(accepted)), headers=headers
            ) as r:
                body = await r.json()
                if r.status == 503:
                    assert r.headers["Retry-After"] == "1"
                    assert body["success"] is False
                    assert body["errors"][0]["code"] == "unavailable"
                    assert "socket buffers" in body["errors"][0]["message"]
                    assert body["errors"][0]["retry_after"] == 1
                    break
                assert r.status == 202, body
                accepted.append(f"c{len(accepted)}")
        assert counter(metrics.EVENTS_REFUSED) == refused_before + 1
        # nothing of the refused event was published: the consumer still holds for the stalled
        # socket (60 s here), and publishes stay refused while it does
        async with http.post(
            server.url + "/v1/events", json=content(len(accepted)), headers=headers
        ) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"

        # the stalled client reads again: its backlog drains, the hold ends, publishing works
        got: list[str] = []

        async def read_stalled() -> None:
            while True:
                _, data = await stalled.frame()
                if data == b"2":  # engine.io ping
                    stalled.send("3")
                elif data.startswith(b'42/feed,["content.created"'):
                    got.append(json.loads(data[len(b"42/feed,") :])[1]["payload"]["content_id"])

        draining = asyncio.create_task(read_stalled())
        try:
            for _ in range(2000):  # until the drained backlog lets a publish in
                async with http.post(
                    server.url + "/v1/events", json=content(len(accepted)), headers=headers
                ) as r:
                    if r.status == 202:
                        accepted.append(f"c{len(accepted)}")
                        break
                    assert r.status == 503 and r.headers["Retry-After"] == "1"
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("publishes stayed refused after the backlog drained")
            # every accepted event reached both clients, once and in order
            events = await reader.wait_for("content.created", len(accepted), timeout=60)
            assert [e["payload"]["content_id"] for e in events] == accepted
            for _ in range(1200):
                if len(got) >= len(accepted):
                    break
                await asyncio.sleep(0.05)
            assert got == accepted
        finally:
            draining.cancel()
    # both connections still work
    assert (await reader.call("room:join", {"room": "zone:after"}))["ok"]
    stalled.send('42/feed,2["room:join",{"room":"zone:after"}]')
    while True:
        _, data = await stalled.frame()
        if data.startswith(b"43/feed,2"):
            assert json.loads(data[len(b"43/feed,2") :])[0]["ok"] is True
            break
    assert counter(metrics.SLOW_CONSUMERS, "websocket") == slow_before  # nobody was cut off
    stalled.close()
    await reader.close()


async def test_publish_is_refused_while_fanout_is_held(server: ServerHandle) -> None:
    """The publish side of the hold: while the fan-out consumer holds (`flowing` cleared), a
    publish is answered 503 at once, without waiting for the hold to end."""
    flowing = server.node.fanout.manager.flowing
    flowing.clear()
    try:
        status, body = await server.publish(content(0))
        assert status == 503
        assert body["errors"][0]["code"] == "unavailable"
        assert "held back" in body["errors"][0]["message"]
    finally:
        flowing.set()
    status, _ = await server.publish(content(1))
    assert status == 202


def _event(ts: datetime) -> Event:
    event = build_event(
        {
            "type": "content.created",
            "subjects": [ROOM],
            "payload": {"content_id": "c1", "kind": "post", "title": "t"},
        }
    )
    return event.model_copy(update={"ts": ts.isoformat()})


async def test_publishes_are_refused_while_fanout_delivers_late() -> None:
    """Admission by delay: after fan-out delivered events that had waited longer than its
    bound since their publish, publishes are refused; once it delivers in time, accepted."""
    fanout = Fanout(LocalManager(), max_delay_s=0.25)
    now = datetime.now(UTC)
    assert fanout.refusal() is None
    await fanout.deliver(_event(now - timedelta(seconds=5)))
    reason = fanout.refusal()
    assert reason is not None and "behind the publishes" in reason
    await fanout.deliver(_event(datetime.now(UTC)))
    assert fanout.refusal() is None
