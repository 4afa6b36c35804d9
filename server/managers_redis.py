"""The Socket.IO client manager of several processes, with one sharded pub/sub channel per room.

Every room emit is appended to the room's Redis log and published on the room's channel in one
Lua call (server/roomlog_redis.py); every node, this one included, delivers what it hears, so
all nodes see a room's events in the same order. A node subscribes (SSUBSCRIBE) to the channel
of a room when its first local socket enters it and unsubscribes when the last one leaves, so
its inbound traffic follows its own rooms, not every node's.

Joining: python-socketio enters rooms synchronously; the subscriptions are sent in batches by
a task of their own. Before a room's SSUBSCRIBE goes out the head of its log is read; once
Redis confirms it, what the log got since that head is delivered (the events published while
the subscription was on its way), then what the channel delivered meanwhile, each once, in
order (`_seen`). `enter_room` returns when that is done, so whatever is emitted to the room
after a join has returned reaches the socket. A message to several rooms arrives on each of
their channels: the first to arrive delivers it, the others skip the sockets it reached.

User control (join, leave, move, disconnect every socket of a user, on every node) travels on
a room's channel: a leave or a move on the channel of the room it takes the sockets out of, in
line with that room's events; a join or a disconnect on the user's own room channel
(`user:<id>`), which every node with a socket of the user hears. A join carries the head of
the joined room's log when it was sent, so a node that delivered later events of the room
before it heard the join sends those to the joining sockets. What has no room (an emit to one
socket, or to everyone, python-socketio's acks and remote disconnects) goes on one small
shared channel, `<prefix>:sio`, that every node hears.

Single Redis: one pub/sub connection carries every channel, so a node hears all its channels
in the one order Redis published them. Redis Cluster: redis-py's cluster pub/sub keeps one
connection per shard node, routes each SSUBSCRIBE to its slot's node and follows failovers
and MOVED; channels of different slots have no order between them (only each room's own).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import socketio
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from socketio.packet import Packet

from server import errors, jsonutil, metrics, redis_client
from server.managers import Delivery, apply_control, is_binary, room_targets
from server.roomlog_redis import RedisRoomLog, older
from server.rooms import ROOM_RE, user_room

log = logging.getLogger("ours.managers")

LISTEN_RETRY_S = 0.2  # how often a lost pub/sub listener tries Redis again
SEEN_MAX = 50_000  # rooms whose last delivered offset is remembered before a clean-up
CATCH_UP_MARGIN_MS = 2000  # a catch-up also rereads this long before the listener was lost
RECONNECT_AWAY_MS = 10_000  # a reconnect by redis-py itself: how far back a catch-up reads
JOIN_WAIT_S = 2.0  # the longest a join waits for its room's subscription (Redis away)
MULTI_MAX = 10_000  # messages to several rooms whose deliveries are remembered
CLUSTER_POLL_S = 0.05  # a cluster read's wait: subscriptions go out between reads
NO_LOG = "-:0-0"  # the offset of a room without a log yet: all of its first epoch is new


class _Skip:
    """The sockets a delivery skips: its own skip list and the members of rooms this node
    already delivered the message to (read as they are, not copied)."""

    __slots__ = ("members", "sids")

    def __init__(self, sids: set[str], members: list[Any]) -> None:
        self.sids = sids
        self.members = members

    def __bool__(self) -> bool:
        return True

    def __contains__(self, sid: object) -> bool:
        return sid in self.sids or any(sid in m for m in self.members)


class RedisManager(Delivery, socketio.AsyncRedisManager):
    """Several processes: Redis room logs + per-room ordered publish; every node delivers
    locally what its rooms' channels bring."""

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
        cluster: bool = False,
    ) -> None:
        """`channel`: the shared channel (what has no room); `log_redis`: the client for the
        room logs and every publish (the process's shared one); pub/sub has a connection of
        its own. `cluster`: `url` is a seed node of a Redis Cluster."""
        super().__init__(
            url,
            channel=channel,
            write_only=write_only,
            json=json,
            redis_options=redis_client.options(),
        )
        self._init_delivery()
        self.cluster = cluster
        self._seen: dict[tuple[str, str], str] = {}  # (ns, room) -> last offset delivered here
        self.log_redis = (
            log_redis if log_redis is not None else redis_client.connect(url, cluster=cluster)
        )
        self.roomlog = RedisRoomLog(self.log_redis, prefix, "sio", window_s, cluster=cluster)
        # the subscriptions: wanted (a local socket is in the room) -> sent -> live
        self._wanted: dict[str, tuple[str, str]] = {}  # channel -> (ns, room)
        self._sent: set[str] = set()  # SSUBSCRIBE sent, no SUNSUBSCRIBE since
        self._live: set[str] = {channel}  # confirmed and caught up: the channel is enough
        self._confirms: dict[str, int] = {}  # confirmations still to come per channel
        self._floor: dict[str, str] = {}  # a join's offset, for a subscription not sent yet
        self._ready: dict[str, asyncio.Future[None]] = {}  # joins waiting for a channel
        self._catching: dict[tuple[str, str], list[dict[str, Any]]] = {}  # held meanwhile
        self._to_catch_up: list[str] = []
        self._changed = asyncio.Event()  # wanted changed: the subscriber task has work
        self._confirmed_some = asyncio.Event()  # the catch-up task has work
        self._pubsub_lock = asyncio.Lock()
        self._multi: OrderedDict[str, set[str]] = OrderedDict()  # eid -> rooms delivered
        self.pubsub: Any = None
        self.redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    def initialize(self) -> None:
        super().initialize()
        if not self.write_only:
            self._tasks = [
                self.server.start_background_task(self._subscriber),
                self.server.start_background_task(self._catcher),
            ]
            for task in self._tasks:
                task.add_done_callback(_log_end)

    # -- emits ---------------------------------------------------------------------------

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
        namespace = namespace or "/"
        rooms = room_targets(room)
        if rooms is None or callback is not None or kwargs.get("ignore_queue"):
            if isinstance(room, str) and callback is None and self.is_connected(room, namespace):
                kwargs["ignore_queue"] = True  # one socket of this node: no other node has it
            await super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        skip = skip_sid if isinstance(skip_sid, list) else ([skip_sid] if skip_sid else [])
        if is_binary(data):  # on the room's channel like every room emit, so it keeps its place
            binary = _binary_message(namespace, rooms, event, data, skip)
            await self.roomlog.publish_volatile(binary)
            return
        message = _room_message(namespace, rooms, event, data, skip)
        if volatile:
            await self.roomlog.publish_volatile(message)
        else:
            await self.roomlog.append_publish(rooms, message)

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms), logged and published in order in one
        round trip (one script call on a single Redis, pipelined calls on a cluster)."""
        await self.roomlog.append_publish_batch(
            [(rooms, _room_message(ns, rooms, event, data, [])) for event, data, ns, rooms in items]
        )

    async def emit_run(self, namespace: str, room: str, event: str, datas: list[Any]) -> None:
        """A run of events to one room: logged and published as one channel message."""
        await self.roomlog.append_publish_run(
            room, [_room_message(namespace, [room], event, data, []) for data in datas]
        )

    async def _publish(self, data: Any) -> None:
        """python-socketio's messages that name no room, on the shared channel; like
        python-socketio, a Redis that is down loses them with a log line."""
        try:
            await self.log_redis.spublish(self.channel, self.json.dumps(data))
        except Exception as exc:
            errors.log_failure(log, "publish on the shared channel failed", exc)

    # -- what the channels bring ---------------------------------------------------------

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if not message.get("ours"):
            await super()._handle_emit(message)
            return
        room = message.get("r")
        ns = message.get("ns") or (message.get("batch") or message.get("run") or [{}])[0]["m"]["ns"]
        if room is None:  # a control message of a user whose room has no channel
            await self._apply_control(ns, message["ctl"])
            return
        held = self._catching.get((ns, room))
        if held is not None:  # the room is being caught up: after that, in order
            held.append(message)
            return
        await self._handle_room(ns, room, message)

    async def _handle_room(self, ns: str, room: str, message: dict[str, Any]) -> None:
        if room not in self.rooms.get(ns, {}):
            return  # left meanwhile (the unsubscribe is on its way)
        if "ctl" in message:
            await self._apply_control(ns, message["ctl"])
        elif "run" in message:
            await self._handle_run(ns, room, message["run"])
        else:
            for part in message["batch"]:
                await self._handle_part(ns, room, part)

    async def _handle_part(self, ns: str, room: str, part: dict[str, Any]) -> None:
        """One room event heard on `room`'s channel: a gap before it is caught up first, one
        already delivered (by a catch-up) is skipped."""
        m = part["m"]
        if "attachments" in m:
            await self._deliver_binary(m, room)
            return
        offsets: dict[str, str] = part["offsets"]
        if offsets:
            offset = offsets.get(room)
            if self._missed(ns, room, offset, part["prevs"].get(room)):
                await self._catch_up_room(ns, room)
            if not self._fresh(ns, room, offset):
                return
        await self._deliver_part(ns, room, m, offsets)

    async def _handle_run(self, ns: str, room: str, run: list[dict[str, Any]]) -> None:
        """A run heard on the channel: each entry checked like a single emit (a gap before it
        is caught up, one already delivered skipped), the fresh ones delivered together."""
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

    def _skip_for(self, ns: str, room: str, m: dict[str, Any]) -> Any:
        """Who a delivery of `m` for `room` skips: its skip list and, for a message to several
        rooms, the sockets of those of its rooms this node delivered it for already."""
        skip = set(m["skip"]) if m.get("skip") else set()
        if len(m["rooms"]) < 2:
            return skip or None
        done = self._multi.get(m["eid"])
        if done is None:
            done = self._multi[m["eid"]] = set()
            if len(self._multi) > MULTI_MAX:
                self._multi.popitem(last=False)
        named = self.rooms.get(ns, {})
        members = [named[r] for r in done if r in named]
        done.add(room)
        return _Skip(skip, members) if members else (skip or None)

    async def _deliver_part(
        self, ns: str, room: str, m: dict[str, Any], offsets: dict[str, str]
    ) -> int:
        skip = self._skip_for(ns, room, m)
        return await self.deliver_local(ns, [room], m["event"], m["data"], skip, offsets, m["eid"])

    async def _deliver_binary(self, m: dict[str, Any], room: str) -> None:
        """A binary room emit heard on `room`'s channel: to this node's sockets in it through
        engineio's queue (binary packets are not framed by the fast path nor kept in the room
        log, on either manager)."""
        if self.server is None or m["ns"] not in self.rooms:
            return
        skip = self._skip_for(m["ns"], room, m)
        sids = [s for s, _ in self.get_participants(m["ns"], room) if skip and s in skip]
        data = Packet.reconstruct_binary(m["data"], [base64.b64decode(a) for a in m["attachments"]])
        await socketio.AsyncManager.emit(
            self, m["event"], data[0], m["ns"], room=room, skip_sid=sids or None
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
        `away_since_ms`). A log that began again (Redis lost its data; or a room that had no
        log when this node subscribed) is read from the start of its new epoch: all of it was
        written after. Returns the deliveries."""
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
            if self._fresh(ns, room, offset):
                sent += await self._deliver_part(ns, room, entry.message, {room: offset})
        return sent

    # -- subscriptions -------------------------------------------------------------------

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if not self.write_only and isinstance(room, str) and ROOM_RE.match(room):
            channel = self.roomlog.channel_of(namespace, room)
            if channel not in self._wanted:
                self._wanted[channel] = (namespace, room)
                self._changed.set()

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        if isinstance(room, str) and room not in self.rooms.get(namespace, {}):
            channel = self.roomlog.channel_of(namespace, room)
            if self._wanted.pop(channel, None) is not None:
                self._changed.set()

    async def enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        """Enter, and return once the room's channel is heard here (at most JOIN_WAIT_S)."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        await self._until_live(namespace, [room])

    async def _until_live(self, ns: str, rooms: list[Any]) -> None:
        waits = []
        for room in rooms:
            if not (isinstance(room, str) and ROOM_RE.match(room)):
                continue
            channel = self.roomlog.channel_of(ns, room)
            if channel in self._live or channel not in self._wanted:
                continue
            future = self._ready.get(channel)
            if future is None:
                future = self._ready[channel] = asyncio.get_running_loop().create_future()
            waits.append(future)
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*waits)), JOIN_WAIT_S)

    def _release(self, channel: str) -> None:
        future = self._ready.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _subscriber(self) -> None:
        """Sends what `_wanted` asks: SSUBSCRIBE for rooms that got a socket here, SUNSUBSCRIBE
        for those whose last one left, every join and leave of a loop tick in one go."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(0)  # the joins of this tick go together
            self._changed.clear()
            try:
                await self._sync_subscriptions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the listener's reconnect subscribes all
                errors.log_failure(log, "pub/sub subscription change failed", exc)
                await asyncio.sleep(LISTEN_RETRY_S)
                self._changed.set()

    async def _sync_subscriptions(self) -> None:
        async with self._pubsub_lock:
            if self.pubsub is None:
                return  # not connected yet: the listener subscribes what is wanted then
            new = [c for c in self._wanted if c not in self._sent]
            gone = [c for c in self._sent if c not in self._wanted and c != self.channel]
            if new:
                rooms = [self._wanted[c] for c in new]
                heads = await self.roomlog.heads(rooms)  # before SSUBSCRIBE: the join point
                for channel, key, head in zip(new, rooms, heads, strict=True):
                    self._seen[key] = _earlier(self._floor.pop(channel, None), head) or NO_LOG
                    self._catching.setdefault(key, [])
                    self._confirms[channel] = self._confirms.get(channel, 0) + 1
                    self._live.discard(channel)
                self._sent.update(new)  # before: the confirmations may come before it returns
                try:
                    await self.pubsub.ssubscribe(*new)
                except Exception:  # not sent: the next try asks again
                    self._sent.difference_update(new)
                    for channel, key in zip(new, rooms, strict=True):
                        self._confirms[channel] -= 1
                        if not self._confirms[channel]:
                            del self._confirms[channel]
                        if not self._catching.get(key):
                            self._catching.pop(key, None)
                    raise
            if gone:
                self._sent.difference_update(gone)
                await self.pubsub.sunsubscribe(*gone)
                for channel in gone:
                    self._live.discard(channel)
                    self._release(channel)
                    ns_room = self._room_of(channel)
                    if ns_room is not None:
                        self._seen.pop(ns_room, None)
                        self._catching.pop(ns_room, None)
            metrics.PUBSUB_CHANNELS.set(len(self._sent))

    def _room_of(self, channel: str) -> tuple[str, str] | None:
        """(ns, room) of a room channel `<tag>:sio`, `{<prefix>:<ns>:<room>}:sio`."""
        tag = channel.rpartition(":")[0]
        body = tag[1:-1].removeprefix(self.roomlog.prefix + ":")
        ns, _, room = body.partition(":")
        return (ns, room) if room else None

    def _confirmed(self, channel: str) -> None:
        """Redis confirmed an SSUBSCRIBE: once the last one asked is in, catch the room up."""
        left = self._confirms.get(channel)
        if left is None:
            return
        if left > 1:
            self._confirms[channel] = left - 1
            return
        del self._confirms[channel]
        if channel in self._sent and channel in self._wanted:
            self._to_catch_up.append(channel)
            self._confirmed_some.set()

    async def _catcher(self) -> None:
        """For each newly confirmed room (those confirmed together side by side): what its log
        got between the join point and the subscription, then what the channel brought
        meanwhile (held in `_catching`), each once and in order; then the room is live and its
        joins return."""
        while True:
            await self._confirmed_some.wait()
            self._confirmed_some.clear()
            channels, self._to_catch_up = self._to_catch_up, []
            await asyncio.gather(*(self._go_live(channel) for channel in channels))

    async def _go_live(self, channel: str) -> None:
        key = self._wanted.get(channel)
        if key is None:
            return
        try:
            await self._catch_up_room(*key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next event's gap check catches up instead
            errors.log_failure(log, "catch-up after a join failed", exc)
        while True:
            held = self._catching.get(key)
            if not held:
                self._catching.pop(key, None)
                break
            self._catching[key] = []
            for message in held:
                await self._handle_room(*key, message)
        if channel in self._sent:
            self._live.add(channel)
        self._release(channel)

    # -- the listener --------------------------------------------------------------------

    def _redis_connect(self) -> None:
        """The pub/sub connection(s): on a cluster redis-py's cluster pub/sub (one
        connection per shard node it needs), else one connection that calls back when
        redis-py connected it again by itself."""
        if self.cluster:
            self.redis = RedisCluster.from_url(self.redis_url, **self.redis_options)
            self.pubsub = self.redis.pubsub()
        else:
            self.redis = aioredis.Redis.from_url(self.redis_url, **self.redis_options)
            self.pubsub = _PubSub(self.redis.connection_pool, reconnected=self._rejoin)
        self.connected = True

    async def _close_pubsub(self) -> None:
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            if self.redis is not None:
                await self.redis.aclose()
        self.pubsub = None

    async def _listen(self) -> AsyncIterator[bytes]:
        """What this node's channels bring, counted; subscription confirmations start the
        joins' catch-ups."""
        async for message in self._redis_listen_with_retries():
            kind = _text(message["type"])
            if kind == "smessage":
                data = message["data"]
                metrics.PUBSUB_MESSAGES.inc()
                metrics.PUBSUB_BYTES.inc(len(data))
                yield data
            elif kind == "ssubscribe":
                self._confirmed(_text(message["channel"]))

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        """python-socketio's listener loop, but back at once: while Redis is away it tries
        again every LISTEN_RETRY_S instead of backing off towards a minute, because room emits
        published while this node is not subscribed never reach its sockets; once subscribed
        again (every room it has sockets in) it catches up from the room logs (`_catch_up`)."""
        away_since: float | None = None
        away_wall_ms = 0
        while True:
            try:
                async with self._pubsub_lock:
                    await self._close_pubsub()
                    self._redis_connect()
                    back = away_since is not None
                    channels = [self.channel, *self._wanted] if back else [self.channel]
                    await self.pubsub.ssubscribe(*channels)
                    self._sent = set(channels)
                    self._confirms.clear()
                    if back:  # every room at once; the catch-up below covers the gap
                        self._catching.clear()
                        self._live = set(channels)
                        for channel in list(self._ready):
                            self._release(channel)
                    metrics.PUBSUB_CHANNELS.set(len(self._sent))
                self._changed.set()  # what was joined while away or before the first connect
                if away_since is not None:
                    log.warning(
                        "redis pub/sub listener back",
                        extra={"away_s": round(time.monotonic() - away_since, 2)},
                    )
                    await self._catch_up(away_wall_ms)
                    away_since = None
                async for message in self._messages():
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

    async def _messages(self) -> AsyncIterator[Any]:
        if not self.cluster:
            async for message in self.pubsub.listen():
                yield message
            return
        pubsub = self.pubsub
        while True:  # bounded reads, so SSUBSCRIBEs get the per-node connections between them
            message = await pubsub.get_sharded_message(timeout=CLUSTER_POLL_S)
            if message is not None:
                yield message

    async def _rejoin(self) -> None:
        """redis-py connected the pub/sub connection again by itself (and resubscribed in
        `on_connect`), so the listener never heard of the drop. Nothing says how long it was
        away; at most the client's retries (a few seconds), so a catch-up reads
        RECONNECT_AWAY_MS back for rooms heard nothing of yet."""
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
    # So these go over the channels too, addressed to every node this one included
    # (`host_id` None), and every node applies them in the channel's order.

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        """A leave or move on the channel of the room the sockets leave; a join (with the
        joined room's head) or a disconnect on the user's room channel. On the log client:
        a Redis that is down raises (the caller answers `unavailable`)."""
        kind = op["op"]
        joined = op["room"] if kind == "enter" else op.get("to")
        if joined is not None and ROOM_RE.match(joined):
            op = {**op, "at": await self.roomlog.current(namespace, joined)}
        room = op["room"] if kind in ("leave", "move") else user_room(op["user"])
        if not ROOM_RE.match(room):  # no channel of its own: the user's room, else the shared one
            room = user_room(op["user"])
        await self._publish_control(namespace, room, op)

    async def _publish_control(self, ns: str, room: str, op: dict[str, Any]) -> None:
        if ROOM_RE.match(room):
            await self.roomlog.publish_control(ns, room, op)
            return
        body = {"method": "emit", "host_id": None, "ours": 1, "r": None, "ns": ns, "ctl": op}
        await self.log_redis.spublish(self.channel, jsonutil.dumps(body))

    async def close_room(self, room: Any, namespace: str | None = None) -> None:
        ns = namespace or "/"
        if isinstance(room, str) and ROOM_RE.match(room):
            await self.roomlog.publish_control(ns, room, {"op": "close", "room": room})
            return
        body = {"method": "close_room", "room": room, "namespace": ns, "host_id": None}
        await self.log_redis.spublish(self.channel, jsonutil.dumps(body))

    async def _apply_control(self, ns: str, op: dict[str, Any]) -> None:
        if op["op"] == "close":
            self.basic_close_room(op["room"], ns)
            return
        entered = await apply_control(self, ns, op)
        if entered and op.get("at"):
            await self._joined_at(ns, op["to"] if op["op"] == "move" else op["room"], op, entered)

    async def _joined_at(self, ns: str, room: str, op: dict[str, Any], sids: list[str]) -> None:
        """Sockets entered `room` by a join sent when its log's head was `op["at"]`: what
        this node delivered of the room after that point before it heard the join (the
        room's and the user's channels have no order between them on a cluster) is sent to
        them; for a room not heard here yet, its catch-up starts from there."""
        at: str = op["at"]
        channel, key = self.roomlog.channel_of(ns, room), (ns, room)
        if channel not in self._sent:  # the subscription is not sent yet: start from `at`
            self._floor[channel] = _earlier(self._floor.get(channel), at) or at
            return
        seen = self._seen.get(key)
        if channel not in self._live:  # sent, not caught up: the catch-up starts from `at`
            self._seen[key] = _earlier(seen, at) or at
            return
        if seen is None or _earlier(at, seen) != at or at == seen:
            return
        replay = await self.roomlog.since(ns, room, at)
        if not replay.recovered:
            return
        epoch = replay.head.rpartition(":")[0] if replay.head else ""
        for entry in replay.entries:
            offset = f"{epoch}:{entry.id}"
            if _earlier(seen, offset) == seen and offset != seen:
                break  # past what was delivered: the channel brings it to these sockets too
            m = entry.message
            frame, eio_pkt = self._encode(ns, m["event"], [m["data"], {"offsets": {room: offset}}])
            for sid in sids:
                eio_sid = self.eio_sid_from_sid(sid, ns)
                if eio_sid is not None and sid not in (m.get("skip") or ()):
                    await self._send_one(eio_sid, frame, eio_pkt)


def _log_end(task: asyncio.Task[None]) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        errors.log_failure(log, "a pub/sub task ended", exc)


def _earlier(a: str | None, b: str | None) -> str | None:
    """The earlier of two offsets of one room (None if neither); of two epochs, `b` (the
    newer reading)."""
    if a is None or b is None:
        return b if a is None else a
    a_epoch, _, a_id = a.rpartition(":")
    b_epoch, _, b_id = b.rpartition(":")
    if a_epoch != b_epoch:
        return b
    return a if older(a_id, b_id) else b


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _PubSub(PubSub):
    """The pub/sub connection of a single Redis, calling `reconnected` when redis-py has
    connected it again (and resubscribed) by itself: `on_connect` runs on a connection's every
    connect after the first, and with channels only once subscribed."""

    def __init__(self, *args: Any, reconnected: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._reconnected = reconnected

    async def on_connect(self, connection: Any) -> None:
        await super().on_connect(connection)
        if self.shard_channels:
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
    """A room emit as it travels on the Redis channels (and sits in the room logs)."""
    return {
        "ns": ns,
        "rooms": rooms,
        "event": event,
        "data": data,
        "skip": skip,
        "eid": uuid.uuid4().hex,
    }
