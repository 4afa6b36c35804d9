"""The Socket.IO client manager of several processes: every room emit is appended to the
Redis room log and published in one Lua call (server/roomlog_redis.py); every node, this one
included, delivers what it receives from the channel, so all nodes see a room's events in the
same order. What both managers share is `managers.Delivery`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from redis.asyncio.client import PubSub
from socketio.packet import Packet

from server import errors, jsonutil, redis_client
from server.managers import (
    CONTROL_EVENT,
    Delivery,
    apply_control,
    is_binary,
    room_targets,
)
from server.roomlog_redis import RedisRoomLog, older

log = logging.getLogger("ours.managers")

LISTEN_RETRY_S = 0.2  # how often a lost pub/sub listener tries Redis again
SEEN_MAX = 50_000  # rooms whose last delivered offset is remembered before a clean-up
CATCH_UP_MARGIN_MS = 2000  # a catch-up also rereads this long before the listener was lost
RECONNECT_AWAY_MS = 10_000  # a reconnect by redis-py itself: how far back a catch-up reads


class RedisManager(Delivery, socketio.AsyncRedisManager):
    """Several processes: Redis room log + ordered publish; every node delivers locally."""

    batches = True

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        prefix: str,
        write_only: bool = False,
        json: Any = None,
        window_s: float = 120.0,
        log_redis: Any = None,
    ) -> None:
        """`log_redis`: the client for the room log (the process's shared one); pub/sub keeps
        python-socketio's own connection."""
        super().__init__(
            url,
            channel=channel,
            write_only=write_only,
            json=json,
            redis_options=redis_client.options(),
        )
        self._init_delivery()
        self._seen: dict[tuple[str, str], str] = {}  # (ns, room) -> last offset delivered here
        self.log_redis = log_redis if log_redis is not None else redis_client.connect(url)
        self.roomlog = RedisRoomLog(self.log_redis, prefix, channel, window_s)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        volatile: bool = False,
        **kwargs: Any,
    ) -> None:
        room = to or room
        rooms = room_targets(room)
        if rooms is None or callback is not None or kwargs.get("ignore_queue"):
            await super().emit(
                event,
                data,
                namespace=namespace or "/",
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        skip = skip_sid if isinstance(skip_sid, list) else ([skip_sid] if skip_sid else [])
        if is_binary(data):  # on the channel like every room emit, so it keeps its place
            await self.roomlog.publish_volatile(
                _binary_message(namespace or "/", rooms, event, data, skip)
            )
            return
        message = _room_message(namespace or "/", rooms, event, data, skip)
        if volatile:
            await self.roomlog.publish_volatile(message)
        else:
            await self.roomlog.append_publish(rooms, message)

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms), logged and published in order in one
        round trip and one publish (a batch that every node unpacks in order)."""
        await self.roomlog.append_publish_batch(
            [(rooms, _room_message(ns, rooms, event, data, [])) for event, data, ns, rooms in items]
        )

    async def emit_run(self, namespace: str, room: str, event: str, datas: list[Any]) -> None:
        """A run of events to one room: logged and published as one channel message."""
        await self.roomlog.append_publish_run(
            room, [_room_message(namespace, [room], event, data, []) for data in datas]
        )

    async def _handle_run(self, run: list[dict[str, Any]]) -> None:
        """A run heard on the channel: each entry checked like a single emit (a gap before it
        is caught up, one already delivered skipped), the fresh ones delivered together."""
        m0 = run[0]["m"]
        ns, room = m0["ns"], m0["rooms"][0]
        fresh: list[tuple[str, Any, str, str]] = []
        for item in run:
            m, offset = item["m"], item["offsets"][room]
            if self._missed(ns, room, offset, item["prevs"].get(room)):
                await self.deliver_local_run(ns, room, fresh)  # in order: what came before
                fresh = []
                await self._catch_up_room(ns, room)
            if self._fresh(ns, room, offset):
                fresh.append((m["event"], m["data"], offset, m["eid"]))
        await self.deliver_local_run(ns, room, fresh)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if "run" in message:
            await self._handle_run(message["run"])
            return
        if message.get("ours") and "batch" in message:
            for part in message["batch"]:  # emit_many: each part as its own room event
                await self._handle_emit({"ours": 1, **part})
            return
        if message.get("ours"):
            m = message["m"]
            if "attachments" in m:
                await self._deliver_binary(m)
                return
            offsets: dict[str, str] = message["offsets"]
            rooms = m["rooms"]
            if offsets:
                prevs: dict[str, str] = message.get("prevs") or {}
                for r in rooms:  # an entry of this room went by unheard: read it from the log
                    if self._missed(m["ns"], r, offsets.get(r), prevs.get(r)):
                        await self._catch_up_room(m["ns"], r)
                # each room's events once: not what a catch-up already delivered
                rooms = [r for r in rooms if self._fresh(m["ns"], r, offsets.get(r))]
                if not rooms:
                    return
            await self.deliver_local(
                m["ns"], rooms, m["event"], m["data"], set(m["skip"]), offsets, m["eid"]
            )
            return
        if message.get("event") == CONTROL_EVENT:
            await apply_control(self, message["namespace"], message["data"][0])
            return
        await super()._handle_emit(message)

    async def _deliver_binary(self, m: dict[str, Any]) -> None:
        """A binary room emit heard on the channel: to this node's sockets in its rooms through
        engineio's queue (binary packets are not framed by the fast path nor kept in the room
        log, on either manager)."""
        if self.server is None or m["ns"] not in self.rooms:
            return
        data = Packet.reconstruct_binary(m["data"], [base64.b64decode(a) for a in m["attachments"]])
        await socketio.AsyncManager.emit(
            self, m["event"], data[0], m["ns"], room=m["rooms"], skip_sid=m["skip"] or None
        )

    def _fresh(self, ns: str, room: str, offset: str | None) -> bool:
        """Is `offset` past what this node delivered to `room`? Remembers it if so. A new
        epoch (the room's log was lost and began again) is always fresh."""
        if offset is None:
            return True
        key = (ns, room)
        seen = self._seen.get(key)
        if seen is not None:
            epoch, _, entry = offset.rpartition(":")
            seen_epoch, _, seen_entry = seen.rpartition(":")
            if epoch == seen_epoch and not older(seen_entry, entry):
                return False
        if len(self._seen) >= SEEN_MAX:  # rooms come and go: forget those with no socket here
            self._forget_left_rooms()
        self._seen[key] = offset
        return True

    def _missed(self, ns: str, room: str, offset: str | None, prev: str | None) -> bool:
        """Did an entry of `room` come before this one that this node did not hear? Known only
        for rooms it has heard before: the entry before this one is not the last it saw."""
        seen = self._seen.get((ns, room))
        if seen is None or offset is None or prev is None:
            return False
        epoch = offset.rpartition(":")[0]
        seen_epoch, _, seen_entry = seen.rpartition(":")
        if epoch != seen_epoch:  # the log began again: missed unless this is its first entry
            return prev != "0-0"
        return prev != seen_entry and older(seen_entry, prev)

    def _forget_left_rooms(self) -> None:
        for ns, room in list(self._seen):
            if room not in self.rooms.get(ns, {}):
                del self._seen[(ns, room)]

    async def _catch_up(self, away_since_ms: int) -> None:
        """After the listener was away: deliver, from the room logs, what each of this node's
        rooms got meanwhile, in order, before any live message (which `_fresh` then skips if
        the catch-up already sent it)."""
        self._forget_left_rooms()
        local = [
            (ns, room)
            for ns, named in self.rooms.items()
            for room in named
            if isinstance(room, str) and ":" in room  # named rooms, not each socket's own
        ]
        replayed = 0
        for ns, room in local:
            replayed += await self._catch_up_room(ns, room, away_since_ms)
        if replayed:
            log.warning("caught up after the listener was away", extra={"delivered": replayed})

    async def _catch_up_room(self, ns: str, room: str, away_since_ms: int | None = None) -> int:
        """Deliver to this node's sockets in `room` the entries of its log after the last one
        delivered here (or, for a room heard nothing of yet, those written since
        `away_since_ms`). A log that began again (Redis lost its data) is read from the start
        of its new epoch: all of it was written after the loss. Returns the deliveries."""
        seen = self._seen.get((ns, room))
        if seen is not None:
            replay = await self.roomlog.since(ns, room, seen)
        elif away_since_ms is not None:
            replay = await self.roomlog.written_since(ns, room, away_since_ms)
        else:
            return 0
        if not replay.recovered and replay.reason == "epoch changed" and replay.head:
            replay = await self.roomlog.since(ns, room, f"{replay.head.rpartition(':')[0]}:0-0")
        if not replay.recovered:
            log.warning(
                "room events this node missed cannot be replayed",
                extra={"namespace": ns, "room": room, "reason": replay.reason},
            )
            return 0
        epoch = replay.head.rpartition(":")[0] if replay.head else ""
        sent = 0
        for entry in replay.entries:
            offset = f"{epoch}:{entry.id}"
            if not self._fresh(ns, room, offset):
                continue
            m = entry.message
            sent += await self.deliver_local(
                ns, [room], m["event"], m["data"], set(m.get("skip") or ()), {room: offset},
                m["eid"],
            )  # fmt: skip
        return sent

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        """python-socketio's listener loop, but back at once: while Redis is away it tries
        again every LISTEN_RETRY_S instead of backing off towards a minute, because room emits
        published while this node is not subscribed never reach its sockets; once subscribed
        again it catches up from the room logs (`_catch_up`)."""
        away_since: float | None = None
        away_wall_ms = 0
        while True:
            try:
                if getattr(self, "pubsub", None) is not None:  # the old connection, if any
                    with contextlib.suppress(Exception):
                        await self.pubsub.aclose()
                self._redis_connect()
                self._catch_up_on_reconnect()
                await self.pubsub.subscribe(self.channel)
                if away_since is not None:
                    log.warning(
                        "redis pub/sub listener back",
                        extra={"away_s": round(time.monotonic() - away_since, 2)},
                    )
                    await self._catch_up(away_wall_ms)
                    away_since = None
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if away_since is None:
                    away_since = time.monotonic()
                    # a little before: the last emits before the loss may not have been heard
                    away_wall_ms = int(time.time() * 1000) - CATCH_UP_MARGIN_MS
                    log.warning("redis pub/sub listener lost; retrying", extra={"error": str(exc)})
                await asyncio.sleep(LISTEN_RETRY_S)

    def _catch_up_on_reconnect(self) -> None:
        """redis-py re-establishes a dropped pub/sub connection by itself (its retry) and
        resubscribes in `on_connect`, so the listener above never hears of the drop: catch up
        there too, before the first message of the new connection is read."""
        self.pubsub = _PubSub(
            self.redis.connection_pool, ignore_subscribe_messages=True, reconnected=self._rejoin
        )

    async def _rejoin(self) -> None:
        """Nothing says how long the connection was away; at most the client's retries (a few
        seconds), so a catch-up reads RECONNECT_AWAY_MS back for rooms heard nothing of yet."""
        log.warning("redis pub/sub connection re-established by the client; catching up")
        try:
            await self._catch_up(int(time.time() * 1000) - RECONNECT_AWAY_MS)
        except Exception as exc:  # the next room event's gap check catches up instead
            errors.log_failure(log, "catch-up after a reconnect failed", exc)

    # -- membership changes, in line with the room events ----------------------------------
    #
    # A room event reaches even this node's sockets only when it comes back over the channel;
    # a change applied here at once would overtake the events emitted just before it (an
    # `audio:ended` to a room and then closing it: the local sockets would be gone first).
    # So these go over the channel too, addressed to every node this one included
    # (`host_id` None), and every node applies them in the channel's order.

    async def _publish_in_line(self, message: dict[str, Any]) -> None:
        """On the room log's client, like the emits; a Redis that is down raises (the caller
        answers `unavailable`) instead of python-socketio's log-and-drop."""
        await self.log_redis.publish(self.channel, jsonutil.dumps(message))

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        await self._publish_in_line(
            {
                "method": "emit",
                "event": CONTROL_EVENT,
                "data": [op],
                "binary": False,
                "namespace": namespace,
                "room": None,
                "skip_sid": None,
                "callback": None,
                "host_id": None,
            }
        )

    async def close_room(self, room: Any, namespace: str | None = None) -> None:
        await self._publish_in_line(
            {"method": "close_room", "room": room, "namespace": namespace or "/", "host_id": None}
        )


class _PubSub(PubSub):
    """python-socketio's pub/sub connection, calling `reconnected` when redis-py has connected
    it again (and resubscribed) by itself: `on_connect` runs on a connection's every connect
    after the first, and with channels only once subscribed."""

    def __init__(self, *args: Any, reconnected: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._reconnected = reconnected

    async def on_connect(self, connection: Any) -> None:
        await super().on_connect(connection)
        if self.channels:
            await self._reconnected()


def _binary_message(
    ns: str, rooms: list[str], event: str, data: Any, skip: list[str]
) -> dict[str, Any]:
    """A binary room emit on the Redis channel: its placeholders, and the attachments base64."""
    packed, attachments = Packet.deconstruct_binary([data])
    message = _room_message(ns, rooms, event, packed, skip)
    message["attachments"] = [base64.b64encode(a).decode() for a in attachments]
    return message


def _room_message(
    ns: str, rooms: list[str], event: str, data: Any, skip: list[str]
) -> dict[str, Any]:
    """A room emit as it travels on the Redis channel (and sits in the room logs)."""
    return {
        "ns": ns,
        "rooms": rooms,
        "event": event,
        "data": data,
        "skip": skip,
        "eid": uuid.uuid4().hex,
    }
