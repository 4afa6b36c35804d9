"""Room logs in Redis Streams, appended atomically with the cluster publish.

One Lua call per room emit: for each target room XADD the message (with the previous entry's
id) to `<prefix>:rl:<ns>:<room>` trimmed to the window (MINID), then PUBLISH the message with
its offsets (and each room's previous entry id, so a node that missed one can tell) on the
Socket.IO channel. A run of emits to one room (a busy live chat) is one call and one PUBLISH.
Redis runs scripts one at a time, so every node receives a room's events in offset order.
Volatile emits (typing, counts) publish without a log entry.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from server import jsonutil
from server.roomlog import Entry, Replay, split

APPEND_PUBLISH_LUA = """
local n = tonumber(ARGV[5])
local offsets = {}
local prevs = {}
for i = 1, n do
  local skey = KEYS[2 * i - 1]
  local ekey = KEYS[2 * i]
  redis.call('SET', ekey, ARGV[3], 'NX')
  local epoch = redis.call('GET', ekey)
  local last = redis.call('XREVRANGE', skey, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if last[1] then prev = last[1][1] end
  local id = redis.call('XADD', skey, 'MINID', '~', ARGV[2], '*', 'm', ARGV[1], 'p', prev)
  redis.call('EXPIRE', skey, ARGV[4])
  redis.call('EXPIRE', ekey, ARGV[4])
  offsets[i] = '"' .. ARGV[5 + i] .. '":"' .. epoch .. ':' .. id .. '"'
  prevs[i] = '"' .. ARGV[5 + i] .. '":"' .. prev .. '"'
end
local out = '{"method":"emit","host_id":null,"ours":1,"offsets":{' ..
  table.concat(offsets, ',') .. '},"prevs":{' .. table.concat(prevs, ',') ..
  '},"m":' .. ARGV[1] .. '}'
redis.call('PUBLISH', KEYS[#KEYS], out)
return out
"""

# A run of emits to one room (APPEND_PUBLISH_LUA's work for each) under one PUBLISH: KEYS =
# stream, epoch, channel; ARGV = minid, epoch candidate, ttl, room, then the messages.
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
redis.call('PUBLISH', KEYS[3], '{"method":"emit","host_id":null,"ours":1,"run":[' ..
  table.concat(items, ',') .. ']}')
return #items
"""

# Many room emits in one call and one PUBLISH: each message appended to its rooms' logs as
# above; the channel gets {"ours":1,"batch":[{offsets, prevs, m}, ...]}, unpacked in order.
# ARGV: minid, epoch candidate, ttl, n, then per message: the message, its room count, rooms.
APPEND_PUBLISH_BATCH_LUA = """
local n = tonumber(ARGV[4])
local a = 5
local k = 1
local parts = {}
for j = 1, n do
  local msg = ARGV[a]
  local nr = tonumber(ARGV[a + 1])
  a = a + 2
  local offsets = {}
  local prevs = {}
  for i = 1, nr do
    local skey = KEYS[k]
    local ekey = KEYS[k + 1]
    local room = ARGV[a]
    k = k + 2
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
  parts[j] = '{"offsets":{' .. table.concat(offsets, ',') .. '},"prevs":{' ..
    table.concat(prevs, ',') .. '},"m":' .. msg .. '}'
end
redis.call('PUBLISH', KEYS[#KEYS], '{"method":"emit","host_id":null,"ours":1,"batch":[' ..
  table.concat(parts, ',') .. ']}')
return n
"""


class RedisRoomLog:
    def __init__(self, redis: Any, prefix: str, channel: str, window_s: float = 120.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.window_ms = int(window_s * 1000)
        self._script = redis.register_script(APPEND_PUBLISH_LUA)
        self._run_script = redis.register_script(APPEND_PUBLISH_RUN_LUA)
        self._batch = redis.register_script(APPEND_PUBLISH_BATCH_LUA)

    def _keys(self, ns: str, room: str) -> tuple[str, str]:
        base = f"{self.prefix}:rl:{ns}:{room}"
        return base, base + ":epoch"

    def _call(self, rooms: list[str], message: dict[str, Any]) -> dict[str, Any]:
        keys: list[str] = []
        for room in rooms:
            keys.extend(self._keys(message["ns"], room))
        keys.append(self.channel)
        minid = int(time.time() * 1000) - self.window_ms
        ttl = max(60, self.window_ms // 1000 * 4)
        args = [jsonutil.dumps(message), minid, uuid.uuid4().hex[:12], ttl, len(rooms), *rooms]
        return {"keys": keys, "args": args}

    async def append_publish(self, rooms: list[str], message: dict[str, Any]) -> None:
        await self._script(**self._call(rooms, message))

    async def append_publish_many(self, items: list[tuple[list[str], dict[str, Any]]]) -> None:
        """Several emits in one round trip (a pipeline of script calls, run in order)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for rooms, message in items:
                await self._script(**self._call(rooms, message), client=pipe)
            await pipe.execute()

    async def append_publish_run(self, room: str, messages: list[dict[str, Any]]) -> None:
        """Several emits to one room (one namespace) logged in order and published as one
        channel message (`{"run": [{offsets, prevs, m}, ...]}`), in one round trip."""
        skey, ekey = self._keys(messages[0]["ns"], room)
        minid = int(time.time() * 1000) - self.window_ms
        ttl = max(60, self.window_ms // 1000 * 4)
        args = [minid, uuid.uuid4().hex[:12], ttl, room, *(jsonutil.dumps(m) for m in messages)]
        await self._run_script(keys=[skey, ekey, self.channel], args=args)

    async def append_publish_batch(self, items: list[tuple[list[str], dict[str, Any]]]) -> None:
        """Several emits, each to its own rooms, in one script call and one PUBLISH."""
        if not items:
            return
        keys: list[str] = []
        args: list[Any] = [
            int(time.time() * 1000) - self.window_ms,
            uuid.uuid4().hex[:12],
            max(60, self.window_ms // 1000 * 4),
            len(items),
        ]
        for rooms, message in items:
            args += [jsonutil.dumps(message), len(rooms), *rooms]
            for room in rooms:
                keys.extend(self._keys(message["ns"], room))
        keys.append(self.channel)
        await self._batch(keys=keys, args=args)

    async def publish_volatile(self, message: dict[str, Any]) -> None:
        body = {"method": "emit", "host_id": None, "ours": 1, "offsets": {}, "m": message}
        await self.redis.publish(self.channel, jsonutil.dumps(body))

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
        r, base = self.redis, f"{self.prefix}:rl:"
        keys = [k async for k in r.scan_iter(match=f"{base}*:user:{user_id}", count=1000)]
        keys += [k async for k in r.scan_iter(match=f"{base}*:user:{user_id}:epoch", count=1000)]
        removed = int(await r.delete(*keys)) if keys else 0
        named = re.compile(r'"(user:)?' + re.escape(user_id) + '"')
        async for key in r.scan_iter(match=f"{base}*", count=1000, _type="stream"):
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
