"""Room logs in Redis Streams, appended atomically with the room's publish.

Every room has one hash tag, `{<prefix>:<ns>:<room>}`: its log stream `<tag>:rl`, its epoch
`<tag>:rl:epoch` and its sharded pub/sub channel `<tag>:sio` sit in one cluster slot, so one
Lua call can XADD the message (with the previous entry's id) trimmed to the window (MINID) and
SPUBLISH it with its offsets (and each room's previous entry id, so a node that missed one can
tell) on the room's channel. Redis runs scripts one at a time, so every node receives a room's
events in offset order. A node hears only the channels of its own rooms
(server/managers_redis.py).

What travels on a room's channel is `{"ours": 1, "r": <room>, "batch": [part, ...]}` (a part:
`{"offsets", "prevs", "m"}`, the message `m` naming all its target rooms) or a run of one
room's events (`"run"`), or a user-control operation (`"ctl"`). A call to several rooms
publishes one message per room, each part carrying the offsets of every target room; on a
single Redis that is one script call whatever the rooms. On a Redis Cluster the rooms of one
emit may sit in different slots: the emit is split into one script call per slot, and when it
spans slots its parts are appended first and published after, once every room's offset is
known (a node that hears an entry before the one logged before it reads the gap from the log,
so order holds). Volatile emits (typing, counts) publish without a log entry.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from redis.crc import key_slot
from redis.exceptions import NoScriptError

from server import jsonutil, redis_client
from server.roomlog import Entry, Replay, split

# Room emits, each to its own rooms, appended to the rooms' logs in order; with ARGV[5] = 1
# each room's parts go out on its channel in one SPUBLISH ({"ours":1,"r":room,"batch":[...]}),
# with 0 nothing is published and each message's offsets and prevs are returned (as JSON
# members) for the caller to publish. KEYS: per message and room: stream, epoch, channel.
# ARGV: minid, epoch candidate, ttl, n, publish, then per message: the message, its room
# count, its rooms.
APPEND_PUBLISH_LUA = """
local n = tonumber(ARGV[4])
local publish = ARGV[5] == '1'
local a = 6
local k = 1
local out = {}
local order = {}
local by_channel = {}
for j = 1, n do
  local msg = ARGV[a]
  local nr = tonumber(ARGV[a + 1])
  a = a + 2
  local offsets = {}
  local prevs = {}
  local channels = {}
  for i = 1, nr do
    local skey = KEYS[k]
    local ekey = KEYS[k + 1]
    channels[i] = {KEYS[k + 2], ARGV[a]}
    local room = ARGV[a]
    k = k + 3
    a = a + 1
    redis.call('SET', ekey, ARGV[2], 'NX')
    local epoch = redis.call('GET', ekey)
    local last = redis.call('XREVRANGE', skey, '+', '-', 'COUNT', 1)
    local prev = '0-0'
    if last[1] then prev = last[1][1] end
    local id = redis.call('XADD', skey, 'MINID', '~', ARGV[1], '*', 'm', msg, 'p', prev)
    redis.call('EXPIRE', skey, ARGV[3])
    redis.call('EXPIRE', ekey, ARGV[3])
    offsets[i] = '"' .. room .. '":"' .. epoch .. ':' .. id .. '"'
    prevs[i] = '"' .. room .. '":"' .. prev .. '"'
  end
  local o = table.concat(offsets, ',')
  local p = table.concat(prevs, ',')
  if publish then
    local part = '{"offsets":{' .. o .. '},"prevs":{' .. p .. '},"m":' .. msg .. '}'
    for i = 1, nr do
      local ch = channels[i][1]
      local entry = by_channel[ch]
      if not entry then
        entry = {channels[i][2], {}}
        by_channel[ch] = entry
        order[#order + 1] = ch
      end
      entry[2][#entry[2] + 1] = part
    end
  else
    out[#out + 1] = o
    out[#out + 1] = p
  end
end
for _, ch in ipairs(order) do
  local entry = by_channel[ch]
  redis.call('SPUBLISH', ch, '{"method":"emit","host_id":null,"ours":1,"r":"' .. entry[1] ..
    '","batch":[' .. table.concat(entry[2], ',') .. ']}')
end
return out
"""

# A run of emits to one room under one SPUBLISH: KEYS = stream, epoch, channel; ARGV = minid,
# epoch candidate, ttl, room, then the messages.
APPEND_PUBLISH_RUN_LUA = """
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local items = {}
for i = 5, #ARGV do
  local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'm', ARGV[i], 'p', prev)
  items[#items + 1] = '{"offsets":{"' .. ARGV[4] .. '":"' .. epoch .. ':' .. id ..
    '"},"prevs":{"' .. ARGV[4] .. '":"' .. prev .. '"},"m":' .. ARGV[i] .. '}'
  prev = id
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SPUBLISH', KEYS[3], '{"method":"emit","host_id":null,"ours":1,"r":"' .. ARGV[4] ..
  '","run":[' .. table.concat(items, ',') .. ']}')
return #items
"""

#: one emit as the script takes it: its rooms and the message
Item = tuple[list[str], dict[str, Any]]


class RedisRoomLog:
    """`channel` names the rooms' channels (`<tag>:<channel>`); `cluster`: split what spans
    slots."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        channel: str = "sio",
        window_s: float = 120.0,
        *,
        cluster: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.cluster = cluster
        self.window_ms = int(window_s * 1000)
        self._script = redis.register_script(APPEND_PUBLISH_LUA)
        self._run_script = redis.register_script(APPEND_PUBLISH_RUN_LUA)

    def _tag(self, ns: str, room: str) -> str:
        return redis_client.tag(self.prefix, ns, room)

    def _keys(self, ns: str, room: str) -> tuple[str, str]:
        base = self._tag(ns, room) + ":rl"
        return base, base + ":epoch"

    def channel_of(self, ns: str, room: str) -> str:
        """The room's sharded pub/sub channel (its slot is its log's)."""
        return f"{self._tag(ns, room)}:{self.channel}"

    def _slot(self, ns: str, room: str) -> int:
        return int(key_slot(self._tag(ns, room).encode()))

    def _head_args(self) -> list[Any]:
        minid = int(time.time() * 1000) - self.window_ms
        return [minid, uuid.uuid4().hex[:12], max(60, self.window_ms // 1000 * 4)]

    def _call(self, items: list[Item], publish: bool) -> dict[str, Any]:
        keys: list[str] = []
        args: list[Any] = [*self._head_args(), len(items), 1 if publish else 0]
        for rooms, message in items:
            args += [jsonutil.dumps(message), len(rooms), *rooms]
            for room in rooms:
                keys += [*self._keys(message["ns"], room), self.channel_of(message["ns"], room)]
        return {"keys": keys, "args": args}

    async def append_publish(self, rooms: list[str], message: dict[str, Any]) -> None:
        await self.append_publish_batch([(rooms, message)])

    async def append_publish_run(self, room: str, messages: list[dict[str, Any]]) -> None:
        """Several emits to one room (one namespace) logged in order and published as one
        channel message (`{"run": [{offsets, prevs, m}, ...]}`), in one round trip."""
        ns = messages[0]["ns"]
        skey, ekey = self._keys(ns, room)
        args = [*self._head_args(), room, *(jsonutil.dumps(m) for m in messages)]
        await self._run_script(keys=[skey, ekey, self.channel_of(ns, room)], args=args)

    async def append_publish_batch(self, items: list[Item]) -> None:
        """Several emits, each to its own rooms, logged and published in order: on a single
        Redis one script call; on a cluster one call per emit and slot, pipelined."""
        if not items:
            return
        if not self.cluster:
            await self._script(**self._call(items, publish=True))
            return
        await self._append_publish_split(items)

    async def _append_publish_split(self, items: list[Item]) -> None:
        """The cluster's way: each emit cut into its slots' parts. An emit whose rooms sit in
        one slot is logged and published by one call; one that spans slots (and, to keep each
        room's order, every later emit of the batch to a room it touched) is logged first,
        then published with every room's offset."""
        calls: list[tuple[int, bool, list[str], dict[str, Any]]] = []  # (item, publish, ...)
        deferred: set[str] = set()
        for index, (rooms, message) in enumerate(items):
            ns = message["ns"]
            by_slot: dict[int, list[str]] = {}
            for room in rooms:
                by_slot.setdefault(self._slot(ns, room), []).append(room)
            later = len(by_slot) > 1 or any(r in deferred for r in rooms)
            if later:
                deferred.update(rooms)
            for slot_rooms in by_slot.values():
                calls.append((index, not later, slot_rooms, message))
        results = await self._pipelined(
            [self._call([(part, message)], publish) for _, publish, part, message in calls]
        )
        offsets: dict[int, list[str]] = {}
        prevs: dict[int, list[str]] = {}
        for (index, publish, _, _), result in zip(calls, results, strict=True):
            if not publish:
                offsets.setdefault(index, []).append(result[0])
                prevs.setdefault(index, []).append(result[1])
        if not offsets:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in sorted(offsets):  # in the batch's order, so each room's stays
                rooms, message = items[index]
                body = jsonutil.dumps(message)
                part = (
                    f'{{"offsets":{{{",".join(offsets[index])}}},'
                    f'"prevs":{{{",".join(prevs[index])}}},"m":{body}}}'
                )
                for room in rooms:
                    pipe.spublish(
                        self.channel_of(message["ns"], room),
                        f'{{"method":"emit","host_id":null,"ours":1,"r":"{room}",'
                        f'"batch":[{part}]}}',
                    )
            await pipe.execute()

    async def _pipelined(self, calls: list[dict[str, Any]]) -> list[Any]:
        """Script calls in one cluster pipeline (each routed to its keys' slot). The
        cluster pipeline does not load scripts: a node that answers NOSCRIPT (new, or a
        replica promoted since) gets the script and its calls, which did not run, again."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                await self._script(**call, client=pipe)
            results = list(await pipe.execute(raise_on_error=False))
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                results[i] = await self._script(**calls[i])
            elif isinstance(result, Exception):
                raise result
        return results

    async def publish_volatile(self, message: dict[str, Any]) -> None:
        """To each target room's channel, without a log entry (and so without offsets)."""
        part = jsonutil.dumps({"offsets": {}, "m": message})
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in message["rooms"]:
                pipe.spublish(
                    self.channel_of(message["ns"], room),
                    f'{{"method":"emit","host_id":null,"ours":1,"r":"{room}","batch":[{part}]}}',
                )
            await pipe.execute()

    async def publish_control(self, ns: str, room: str, op: dict[str, Any]) -> None:
        """A user-control operation on `room`'s channel, in line with its events."""
        body = {"method": "emit", "host_id": None, "ours": 1, "r": room, "ns": ns, "ctl": op}
        await self.redis.spublish(self.channel_of(ns, room), jsonutil.dumps(body))

    async def heads(self, rooms: list[tuple[str, str]]) -> list[str | None]:
        """The offset of each room's newest entry, or None for a room without a log yet;
        read without claiming an epoch (a node subscribing reads them for each new room)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for ns, room in rooms:
                skey, ekey = self._keys(ns, room)
                pipe.get(ekey)
                pipe.xrevrange(skey, "+", "-", count=1)
            replies = await pipe.execute()
        out: list[str | None] = []
        for epoch, last in zip(replies[::2], replies[1::2], strict=True):
            out.append(None if epoch is None else f"{epoch}:{last[0][0] if last else '0-0'}")
        return out

    async def current(self, ns: str, room: str) -> str:
        skey, ekey = self._keys(ns, room)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(ekey)
            pipe.xrevrange(skey, "+", "-", count=1)
            epoch, last = await pipe.execute()
        if epoch is None:  # no log yet: claim the epoch so later offsets chain from here
            candidate = uuid.uuid4().hex[:12]
            await self.redis.set(ekey, candidate, nx=True, ex=max(60, self.window_ms // 250))
            epoch = await self.redis.get(ekey)
        return f"{epoch}:{last[0][0] if last else '0-0'}"

    async def since(self, ns: str, room: str, offset: str) -> Replay:
        skey, ekey = self._keys(ns, room)
        epoch, after = split(offset)
        current = await self.redis.get(ekey)
        head = await self.current(ns, room)
        if current is None or current != epoch:
            return Replay(False, [], head, "epoch changed")
        if not older("0-0", after) and after != "0-0":
            return Replay(False, [], head, "bad offset")
        rows = await self.redis.xrange(skey, min=f"({after}" if after != "0-0" else "-")
        oldest_ms = int(time.time() * 1000) - self.window_ms  # MINID trims only on append
        entries = [
            Entry(i, f["p"], jsonutil.loads(f["m"]))
            for i, f in rows
            if int(i.partition("-")[0]) >= oldest_ms
        ]
        if entries and entries[0].prev != after:
            return Replay(False, [], head, "outside the recovery window")
        head_id = split(head)[1]
        if not entries and head_id != after:
            reason = "outside the recovery window" if older(after, head_id) else "bad offset"
            return Replay(False, [], head, reason)
        return Replay(True, entries, head)

    async def written_since(self, ns: str, room: str, ms: int) -> Replay:
        """The room's entries written at or after `ms` (Unix milliseconds; stream ids are
        times), for a node that knows when it stopped hearing the channel but not which
        entry it saw last."""
        skey, _ = self._keys(ns, room)
        head = await self.current(ns, room)
        rows = await self.redis.xrange(skey, min=f"{ms}-0")
        return Replay(True, [Entry(i, f["p"], jsonutil.loads(f["m"])) for i, f in rows], head)

    async def forget_user(self, user_id: str) -> int:
        """Erasure: the user's own room logs go; entries of shared rooms' logs (conversations,
        audio rooms, ...) that name them are deleted. Returns the keys deleted."""
        r, own = self.redis, self._tag("*", f"user:{user_id}")  # {<prefix>:*:user:<id>}
        keys = [k async for k in r.scan_iter(match=f"{own}:rl", count=1000)]
        keys += [k async for k in r.scan_iter(match=f"{own}:rl:epoch", count=1000)]
        removed = 0
        for key in keys:  # one by one: on a cluster each sits in a slot of its own
            removed += int(await r.delete(key))
        named = re.compile(r'"(user:)?' + re.escape(user_id) + '"')
        shared = self._tag("*", "").removesuffix(":}") + "}:rl"  # {<prefix>:*}:rl
        async for key in r.scan_iter(match=shared, count=1000, _type="stream"):
            ids = [i for i, fields in await r.xrange(key) if named.search(fields.get("m", ""))]
            if ids:
                await r.xdel(key, *ids)
        return removed

    async def close(self) -> None:
        pass


def older(a: str, b: str) -> bool:
    """Stream id a < b (False for anything that is not a stream id)."""
    try:
        ams, _, aseq = a.partition("-")
        bms, _, bseq = b.partition("-")
        return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))
    except ValueError:
        return False
