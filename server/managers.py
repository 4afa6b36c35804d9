"""Socket.IO client managers: how a room emit reaches sockets, on one node or many.

Both managers share `Delivery`:
- room events get an offset in the room log and carry `{"offsets": {room: offset}}` as an
  extra last argument (JS: `socket.on("message:new", (msg, meta) => ...)`); volatile emits
  (typing, counts, bursts) carry none and are not kept;
- the packet is encoded once and framed once; websocket sockets get the shared frame through
  the coalescing fast path (server/transport.py), others the engineio queue;
- a socket that is recovering a room gets live events buffered until its replay is sent, so it
  sees every event once and in order;
- user control: put every socket of a user (any node) into a room, take them out, move those
  in one room to another, disconnect.

`LocalManager` (here) is the embedded default (in-process room log). `RedisManager`
(managers_redis.py) appends to the Redis room log and publishes on the room's channel in one
Lua call; every node, this one included, delivers what it receives from the channels of its
rooms, so all nodes see a room's events in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from server import metrics
from server.roomlog import MemoryRoomLog, Replay
from server.rooms import ROOM_RE
from server.server_events import SERVER_DISCONNECT, check_emitted
from server.transport import CONNECTIONS, congested, congested_connections, text_frame

log = logging.getLogger("ours.fanout")

CONTROL_EVENT = "__ours_control__"
MAX_SLOW_QUEUE = 5000  # packets waiting in engineio's queue before a socket counts as slow


def room_targets(room: Any) -> list[str] | None:
    """The project's rooms an emit targets, or None for anything else (a sid, everyone)."""
    if isinstance(room, str):
        return [room] if ROOM_RE.match(room) else None
    if isinstance(room, list | tuple) and room and all(isinstance(r, str) for r in room):
        return list(room) if all(ROOM_RE.match(r) for r in room) else None
    return None


class _Recovering:
    __slots__ = ("buffer", "rooms")

    def __init__(self) -> None:
        self.rooms: set[str] = set()
        self.buffer: list[tuple[str, bytes, Any]] = []  # (eid, frame, eio packet)


class Delivery:
    """Local delivery shared by both managers (mixed into socketio managers), and what fan-out
    (server/fanout.py) may call on either."""

    server: Any
    rooms: dict[str, Any]
    roomlog: Any  # MemoryRoomLog | RedisRoomLog
    #: True when the manager emits a run of room events in one round trip (`emit_many`)
    batches: bool = False

    if TYPE_CHECKING:  # python-socketio's manager API, which every Delivery is mixed into

        async def emit(
            self,
            event: str,
            data: Any,
            namespace: str,
            room: Any = None,
            skip_sid: Any = None,
            callback: Any = None,
            to: Any = None,
            volatile: bool = False,
            **kwargs: Any,
        ) -> None: ...

        def is_connected(self, sid: str, namespace: str) -> bool: ...

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        """Join, leave or disconnect every socket of a user, on every node."""
        raise NotImplementedError

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms) in one round trip (where `batches`)."""
        raise NotImplementedError

    async def emit_run(self, namespace: str, room: str, event: str, datas: list[Any]) -> None:
        """Room events of one name to one room, in order, in one round trip; each socket gets
        the run in one write (`deliver_local_run`)."""
        raise NotImplementedError

    async def _until_live(self, ns: str, rooms: list[Any]) -> None:
        """Return once this node hears `rooms`' events (at once where it always does)."""

    def _init_delivery(self) -> None:
        self.recovering: dict[tuple[str, str], _Recovering] = {}
        # the rooms of each socket: python-socketio finds them by scanning every room of the
        # namespace, which costs O(rooms) per join, leave and disconnect
        self._sid_rooms: dict[tuple[str, str], set[Any]] = {}
        #: set while room events flow; cleared while the consumer waits for sockets to drain
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._backlog_checked = -1.0  # loop time of the last `backlogged` count
        self._backlog_seen = False

    def _over_mark(self) -> bool:
        return congested() >= max(1, len(CONNECTIONS) // 20)

    def backlogged(self) -> bool:
        """True while the consumer holds, or while at least one in twenty of this node's
        websocket connections (and at least one) holds more than the congestion mark unsent:
        admission control refuses publishes then. Counted at most once per millisecond, so
        a burst of publishes does not walk the congested connections each."""
        if not self.flowing.is_set():
            return True
        now = asyncio.get_running_loop().time()
        if now - self._backlog_checked >= 0.001:
            self._backlog_checked = now
            self._backlog_seen = self._over_mark()
        return self._backlog_seen

    async def hold_while_congested(self, max_wait: float) -> None:
        """Backpressure: while at least one in twenty of this node's websocket connections
        (and at least one) has a backlog the kernel has not taken, wait for them to drain, at
        most `max_wait` seconds; publishes are refused meanwhile (`backlogged`, 503 +
        Retry-After), so the events waiting here stay few. Connections still backed up when
        the wait ends are cut off as slow consumers, so a socket that cannot keep up delays
        the others once, by at most `max_wait`."""
        if not self._over_mark():
            return
        metrics.FANOUT_HOLDS.inc()
        self.flowing.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        try:
            while self._over_mark():
                if loop.time() >= deadline:
                    for conn in congested_connections():
                        conn.drop_slow()
                    break
                await asyncio.sleep(0.002)
        finally:
            self.flowing.set()

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._sid_rooms.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        rooms = self._sid_rooms.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._sid_rooms[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [r for r in self._sid_rooms.get((namespace, sid), ()) if r is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's, without its scan (and copy) of every room of the namespace."""
        for room in list(self._sid_rooms.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        callbacks: dict[str, Any] = self.callbacks  # type: ignore[attr-defined]
        callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):  # type: ignore[attr-defined]
            if namespace in pending and sid in pending[namespace]:
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]

    def _encode(self, ns: str, event: str, args: list[Any]) -> tuple[bytes, Any]:
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=ns, data=[event, *args])
        encoded = pkt.encode()
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        return text_frame(b"4" + encoded.encode()), eio_pkt

    async def deliver_local(
        self,
        ns: str,
        rooms: list[str],
        event: str,
        data: Any,
        skip: Any,
        offsets: dict[str, str],
        eid: str,
    ) -> int:
        """Send one room event to this node's sockets in `rooms`; return how many got it."""
        if self.server is None or ns not in self.rooms:
            return 0
        if len(rooms) == 1 and rooms[0] not in self.rooms[ns]:
            return 0  # nobody here (most users' rooms of a fan-out): nothing to encode
        args = [data, {"offsets": offsets}] if offsets else [data]
        frame, eio_pkt = self._encode(ns, event, args)
        recovering = self.recovering
        sent = 0
        slow: list[str] = []
        for sid, eio_sid in self.get_participants(ns, rooms if len(rooms) > 1 else rooms[0]):  # type: ignore[attr-defined]
            if skip and sid in skip:
                continue
            if recovering:
                state = recovering.get((ns, sid))
                if state is not None:
                    state.buffer.append((eid, frame, eio_pkt))
                    continue
            conn = CONNECTIONS.get(eio_sid)
            if conn is not None and conn.fast() and conn.write(frame):
                sent += 1
                continue
            if not await self._send_slow(eio_sid, eio_pkt):
                slow.append(eio_sid)
            else:
                sent += 1
        for eio_sid in slow:
            await self._drop_slow(eio_sid)
        return sent

    async def deliver_local_run(
        self, ns: str, room: str, run: list[tuple[str, Any, str, str]]
    ) -> int:
        """Send a run of `room`'s events, (event, data, offset, eid) in order, to this node's
        sockets in it: one pass over the room, each websocket getting the run's frames in one
        write. Returns the deliveries (sockets x events)."""
        if self.server is None or ns not in self.rooms or not run:
            return 0
        encoded = [
            (eid, *self._encode(ns, event, [data, {"offsets": {room: offset}}]))
            for event, data, offset, eid in run
        ]
        frames = b"".join(frame for _, frame, _ in encoded)
        recovering = self.recovering
        sent = 0
        slow: list[str] = []
        for sid, eio_sid in self.get_participants(ns, room):  # type: ignore[attr-defined]
            if recovering:
                state = recovering.get((ns, sid))
                if state is not None:
                    state.buffer.extend(encoded)
                    continue
            conn = CONNECTIONS.get(eio_sid)
            if conn is not None and conn.fast() and conn.write(frames):
                sent += len(encoded)
                continue
            for _, _, eio_pkt in encoded:
                if not await self._send_slow(eio_sid, eio_pkt):
                    slow.append(eio_sid)
                    break
                sent += 1
        for eio_sid in slow:
            await self._drop_slow(eio_sid)
        return sent

    async def _send_slow(self, eio_sid: str, eio_pkt: Any) -> bool:
        sock = self.server.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            return True
        if sock.queue.qsize() > MAX_SLOW_QUEUE:
            return False
        await sock.send(eio_pkt)
        return True

    async def _drop_slow(self, eio_sid: str) -> None:
        metrics.SLOW_CONSUMERS.labels("polling").inc()
        log.warning("slow consumer disconnected", extra={"eio_sid": eio_sid})
        await self.server.eio.disconnect(eio_sid)

    async def _send_one(self, eio_sid: str, frame: bytes, eio_pkt: Any) -> None:
        conn = CONNECTIONS.get(eio_sid)
        if conn is not None and conn.fast() and conn.write(frame):
            return
        await self._send_slow(eio_sid, eio_pkt)

    async def send_to(self, ns: str, sid: str, event: str, data: Any) -> None:
        """Send one event to one socket in line with its room events (same path, same order)."""
        check_emitted(event, data)
        eio_sid = self.eio_sid_from_sid(sid, ns)  # type: ignore[attr-defined]
        if eio_sid is not None:
            await self._send_one(eio_sid, *self._encode(ns, event, [data]))

    def begin_recovery(self, ns: str, sid: str) -> None:
        """From now on, hold this socket's live room events until `recover` releases them."""
        self.recovering.setdefault((ns, sid), _Recovering())

    def end_recovery(self, ns: str, sid: str) -> None:
        self.recovering.pop((ns, sid), None)

    async def recover(
        self, sid: str, ns: str, wanted: dict[str, str], roomlog: Any
    ) -> dict[str, dict[str, Any]]:
        """Join `wanted` rooms and replay what the socket missed since each offset, then
        release the live events that arrived meanwhile (each event once, in order)."""
        eio_sid = self.eio_sid_from_sid(sid, ns)  # type: ignore[attr-defined]
        state = self.recovering.setdefault((ns, sid), _Recovering())
        for room in wanted:
            state.rooms.add(room)
            self.basic_enter_room(sid, ns, room)
        await self._until_live(ns, list(wanted))  # the replays then meet the live events
        sent_eids: set[str] = set()
        results: dict[str, dict[str, Any]] = {}
        try:
            for room, offset in wanted.items():
                replay: Replay = await roomlog.since(ns, room, offset)
                epoch = replay.head.rpartition(":")[0] if replay.head else ""
                for entry in replay.entries:
                    m = entry.message
                    if m["eid"] in sent_eids:
                        continue
                    sent_eids.add(m["eid"])
                    meta = {"offsets": {room: f"{epoch}:{entry.id}"}}
                    frame, eio_pkt = self._encode(ns, m["event"], [m["data"], meta])
                    await self._send_one(eio_sid, frame, eio_pkt)
                results[room] = {
                    "recovered": replay.recovered,
                    "replayed": len(replay.entries),
                    "offset": replay.head,
                    **({"reason": replay.reason} if replay.reason else {}),
                }
        finally:
            while True:
                pending, state.buffer = state.buffer, []
                if not pending:
                    self.recovering.pop((ns, sid), None)
                    break
                for eid, frame, eio_pkt in pending:
                    if eid not in sent_eids:
                        await self._send_one(eio_sid, frame, eio_pkt)
        return results


async def apply_control(manager: Any, namespace: str, op: dict[str, Any]) -> list[str]:
    """Apply a user-control operation to this node's sockets of the user; returns those that
    entered a room (a join, a move). Rooms are entered without waiting for their channel (this
    runs in the Redis manager's listener, which is what would bring it)."""
    server = manager.server
    if server is None or namespace not in manager.rooms:
        return []
    sids = [sid for sid, _ in manager.get_participants(namespace, f"user:{op['user']}")]
    entered: list[str] = []
    for sid in sids:
        if op["op"] == "enter":
            manager.basic_enter_room(sid, namespace, op["room"])
            entered.append(sid)
        elif op["op"] == "leave":
            manager.basic_leave_room(sid, namespace, op["room"])
        elif op["op"] == "move":  # only the user's sockets in the room, into `to`
            if op["room"] in manager.get_rooms(sid, namespace):
                manager.basic_leave_room(sid, namespace, op["room"])
                manager.basic_enter_room(sid, namespace, op["to"])
                entered.append(sid)
        elif op["op"] == "disconnect":
            await server.emit(
                SERVER_DISCONNECT,
                {"code": op.get("code", "forbidden"), "message": op.get("reason", "")},
                to=sid,
                namespace=namespace,
                ignore_queue=True,
            )
            await server.disconnect(sid, namespace=namespace, ignore_queue=True)
    return entered


class LocalManager(Delivery, socketio.AsyncManager):
    """One process: in-process room log, direct delivery."""

    def __init__(self, window_s: float = 120.0) -> None:
        super().__init__()
        self._init_delivery()
        self.roomlog = MemoryRoomLog(window_s)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        volatile: bool = False,
        **kwargs: Any,
    ) -> None:
        room = to or room
        rooms = room_targets(room)
        if rooms is None or callback is not None or is_binary(data):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        eid = uuid.uuid4().hex
        offsets: dict[str, str] = {}
        if not volatile:
            message = {"ns": namespace, "event": event, "data": data, "eid": eid}
            offsets = {r: self.roomlog.append(namespace, r, message) for r in rooms}
        await self.deliver_local(namespace, rooms, event, data, skip_set(skip_sid), offsets, eid)

    async def emit_run(self, namespace: str, room: str, event: str, datas: list[Any]) -> None:
        run: list[tuple[str, Any, str, str]] = []
        for data in datas:
            eid = uuid.uuid4().hex
            message = {"ns": namespace, "event": event, "data": data, "eid": eid}
            run.append((event, data, self.roomlog.append(namespace, room, message), eid))
        await self.deliver_local_run(namespace, room, run)

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms), each logged and delivered in order."""
        for event, data, namespace, rooms in items:
            await self.emit(event, data, namespace, room=rooms)

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        await apply_control(self, namespace, op)


def skip_set(skip_sid: Any) -> set[str] | None:
    if not skip_sid:
        return None
    return set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}


def is_binary(data: Any) -> bool:
    return bool(sio_packet.Packet.data_is_binary(data))
