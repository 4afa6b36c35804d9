"""The WebSocket fast path: a room event is encoded once, framed once (server frames are
unmasked, so every client gets the same bytes) and written to each socket's transport, with
everything a socket is sent within one loop tick coalesced into one write.

`FastWebSocket` replaces engineio's aiohttp WebSocket wrapper so the manager can reach each
connection's transport; permessage-deflate is off (as in Node's socket.io default), which is
what makes the shared frame possible. Sockets on long-polling, or not yet upgraded, take the
ordinary engineio queue. A socket whose unsent bytes exceed the bound is disconnected as a slow
consumer instead of growing memory or delaying the others. The kernel's send buffer of each
websocket is capped (`SEND_BUFFER_BYTES`) so that a backlog shows up here, where it is
measured and bounded, instead of hiding in megabytes of autotuned kernel buffer (seconds of
delay that admission control could not see). `congested()` counts the sockets
with a backlog the kernel has not taken yet; the fan-out consumer holds back while many are
(see `Delivery.hold_while_congested`), which in turn holds back the publish path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiohttp import WSCloseCode
from aiohttp.web import WebSocketResponse
from engineio.async_drivers.aiohttp import WebSocket

from server import metrics

log = logging.getLogger("ours.transport")

#: eio sid -> live fast connection
CONNECTIONS: dict[str, FastWebSocket] = {}
#: connections with frames waiting for this tick's flush
_DIRTY: list[FastWebSocket] = []
#: connections whose unsent bytes (queued this tick or in the transport) passed
#: CONGESTED_BYTES; pruned by `congested()` as they drain
_CONGESTED: set[FastWebSocket] = set()
CONGESTED_BYTES = 128 * 1024
#: SO_SNDBUF of every websocket (the kernel doubles it): ~0.25 MiB queued in the kernel per
#: socket at most, plenty for a room stream (at 100 ms RTT still ~2.5 MiB/s per socket)
SEND_BUFFER_BYTES = 128 * 1024


def congested() -> int:
    """How many connections still hold more than half the congestion mark unsent (in the
    transport's buffer, or queued for this tick's write)."""
    if _CONGESTED:
        for conn in list(_CONGESTED):
            t = conn.transport
            if (
                t is None
                or conn.slow
                or t.is_closing()
                or t.get_write_buffer_size() + conn._pending_bytes <= CONGESTED_BYTES // 2
            ):
                _CONGESTED.discard(conn)
    return len(_CONGESTED)


def congested_connections() -> list[FastWebSocket]:
    congested()
    return list(_CONGESTED)


def _flush_all() -> None:
    dirty = _DIRTY[:]
    _DIRTY.clear()
    for conn in dirty:
        try:
            conn._flush()
        except Exception:  # one broken transport never stops the others
            log.warning("flush failed", exc_info=True)


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked RFC 6455 text frame."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class FastWebSocket(WebSocket):
    """engineio's aiohttp WebSocket, registered by eio sid, with a coalescing outbox."""

    max_buffer = 1024 * 1024  # bytes not yet written before a socket counts as slow

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self.socket: Any = handler.__self__  # the engineio AsyncSocket this connection serves
        self.eio_sid: str = self.socket.sid
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slow = False

    async def __call__(self, environ: dict[str, Any]) -> Any:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        writer = getattr(self._sock, "_writer", None)
        self.transport = getattr(writer, "transport", None)
        self._loop = asyncio.get_running_loop()
        self.environ = environ
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
                except OSError:  # not a TCP socket (tests' pipes): nothing to cap
                    pass
            CONNECTIONS[self.eio_sid] = self
        try:
            await self.handler(self)
        finally:
            CONNECTIONS.pop(self.eio_sid, None)
            _CONGESTED.discard(self)
            self._pending.clear()
            self._pending_bytes = 0
        return self._sock

    def fast(self) -> bool:
        """True when frames may bypass engineio's queue without overtaking what is in it."""
        s = self.socket
        return bool(s.upgraded and not s.upgrading and s.queue.empty())

    def write(self, frame: bytes) -> bool:
        """Queue a frame for this tick's write; False if the connection is gone or slow."""
        t = self.transport
        if t is None or self.slow or t.is_closing():
            return False
        if not self._pending:
            _DIRTY.append(self)
            if len(_DIRTY) == 1:  # one flush callback per loop tick for all connections
                assert self._loop is not None
                self._loop.call_soon(_flush_all)
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        if self._pending_bytes > CONGESTED_BYTES:  # a burst within one tick counts at once
            _CONGESTED.add(self)
        return True

    def _flush(self) -> None:
        t = self.transport
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        self._pending_bytes = 0
        if t is None or t.is_closing():
            return
        unsent = t.get_write_buffer_size() + len(data)
        if unsent > self.max_buffer:
            self.drop_slow()
            return
        t.write(data)
        if unsent > CONGESTED_BYTES and t.get_write_buffer_size() > CONGESTED_BYTES:
            _CONGESTED.add(self)

    def drop_slow(self) -> None:
        """Disconnect as a slow consumer (close code 1013), once."""
        if self.slow:
            return
        self.slow = True
        _CONGESTED.discard(self)
        metrics.SLOW_CONSUMERS.labels("websocket").inc()
        log.warning("slow consumer disconnected", extra={"eio_sid": self.eio_sid})
        assert self._loop is not None
        self._loop.create_task(
            self._sock.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"slow consumer")
        )
