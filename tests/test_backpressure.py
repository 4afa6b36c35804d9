"""Slow consumers and backpressure on the fan-out fast path: a client that stops reading is
cut off with a reason (close code 1013) while the others in its room get every event in order,
and the publish path waits, then answers 503, while fan-out is held back."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from config import Settings
from server import metrics
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

    sent = 0
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {server.settings.api_keys[0]}"}
        # publish until the stalled socket has been cut off (a few MiB at most), then a bit more
        while counter(metrics.SLOW_CONSUMERS, "websocket") == slow_before:
            assert sent < 5000, "the stalled client was never cut off"
            async with http.post(
                server.url + "/v1/events", json=content(sent), headers=headers
            ) as r:
                assert r.status == 202, await r.text()
            sent += 1
        for _ in range(20):
            async with http.post(
                server.url + "/v1/events", json=content(sent), headers=headers
            ) as r:
                assert r.status == 202, await r.text()
            sent += 1

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


async def test_publish_waits_while_fanout_is_held_then_answers_503(server: ServerHandle) -> None:
    """The publish side of the hold: `flowing` is what the fan-out consumer clears while it
    waits for the sockets (see the test above for the whole path)."""
    flowing = server.node.fanout.manager.flowing  # held for up to 2 x 2 s here
    flowing.clear()
    try:
        status, body = await server.publish(content(0))
        assert status == 503
        assert body["errors"][0]["code"] == "unavailable"
        assert "held back" in body["errors"][0]["message"]
        # released while a publish waits: it goes through
        pending = asyncio.create_task(server.publish(content(1)))
        await asyncio.sleep(0.2)
        assert not pending.done()
        flowing.set()
        status, _ = await pending
        assert status == 202
    finally:
        flowing.set()
