"""Presence in Redis: the same contract as MemoryPresence, shared by every process.

Users are spread over SHARDS shards (crc32 of the user id); a shard's keys share one hash tag,
so on a Redis Cluster each sits in one slot and every script or transaction below touches one
slot. A user's keys go with their shard, not a tag of their own, because the expiry sweep needs
a sorted set of every device, and `touch` must write that set in the same script as the
user's devices (so a crashed node's device is always found and its user told offline once):
the set of everyone is split per shard and each user lives beside their shard's part. With 64
shards the load spreads over 64 slots; the sweep and multi-user reads fan out over the shards.

Keys under `<prefix>:pres:{<shard>}:`:
  dev:<user>   ZSET device -> expiry (ms)         who is connected, per user
  all          ZSET "<user>|<device>" -> expiry   the shard's devices, for the expiry sweep
  on           HASH user -> "1"                   announced online (so changes are told once)
  seen         HASH user -> last seen (ms)
  inv          SET users shown offline to others
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from presence.backend import Status
from server.redis_client import tag

SHARDS = 64

TOUCH = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4] .. '|' .. ARGV[3])
redis.call('HSET', KEYS[4], ARGV[4], now)
if redis.call('HSETNX', KEYS[3], ARGV[4], '1') == 1 then return 1 end
return 0
"""

SETTLE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
return redis.call('HDEL', KEYS[2], ARGV[2])
"""

# one shard: the users' device sets (ARGV[2] .. user) are not in KEYS, but share the shard's
# hash tag, so they sit in the slot of the declared keys. A member is "<user>|<device>": split
# at the last "|" (a user id may hold one, a device, a socket id, does not)
EXPIRE = """
local now = tonumber(ARGV[1])
local gone = {}
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(members) do
  redis.call('ZREM', KEYS[1], m)
  local user, dev = string.match(m, '^(.*)|([^|]*)$')
  local ukey = ARGV[2] .. user
  redis.call('ZREM', ukey, dev)
  redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
  if redis.call('ZCARD', ukey) == 0 and redis.call('HDEL', KEYS[2], user) == 1 then
    redis.call('HSET', KEYS[3], user, now)
    gone[#gone + 1] = user
  end
end
return gone
"""


class RedisPresence:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.r = redis
        self.prefix = prefix
        self._touch = redis.register_script(TOUCH)
        self._settle = redis.register_script(SETTLE)
        self._expire = redis.register_script(EXPIRE)
        self._upgraded = False
        self._upgrading = asyncio.Lock()

    def _base(self, shard: int) -> str:
        return f"{self.prefix}:pres:{tag(str(shard))}:"

    def _shard(self, user_id: str) -> str:
        return self._base(zlib.crc32(user_id.encode()) % SHARDS)

    async def _upgrade(self) -> None:
        """Once per process, before its first call: the keys of the layout before shards (one
        `inv` set, `seen` and `on` hash and `all` set for everyone: a Redis that an earlier
        version used) go into the shards, so invisible users stay invisible and last-seen
        times stay; old devices are dropped (their nodes' next refresh writes them again).
        Keys an older process still writes during a rolling upgrade move at the next start."""
        if self._upgraded:
            return
        async with self._upgrading:
            if self._upgraded:
                return
            old = [f"{self.prefix}:pres:{k}" for k in ("inv", "seen", "on", "all")]
            if await self.r.exists(*old):
                hidden = list(await self.r.smembers(old[0]))
                seen = [(u, ms) async for u, ms in self.r.hscan_iter(old[1], count=1000)]
                for i in range(0, max(len(hidden), len(seen)), 1000):
                    async with self.r.pipeline(transaction=False) as pipe:
                        for u in hidden[i : i + 1000]:
                            pipe.sadd(f"{self._shard(u)}inv", u)
                        for u, ms in seen[i : i + 1000]:
                            pipe.hsetnx(f"{self._shard(u)}seen", u, ms)
                        await pipe.execute()
                match = f"{self.prefix}:pres:dev:*"
                devices = [k async for k in self.r.scan_iter(match=match, count=1000)]
                await self.r.delete(*old, *devices)
            self._upgraded = True

    async def touch(self, user_id: str, device: str, ttl: float) -> bool:
        await self._upgrade()
        now = int(time.time() * 1000)
        b = self._shard(user_id)
        return bool(
            await self._touch(
                keys=[f"{b}dev:{user_id}", f"{b}all", f"{b}on", f"{b}seen"],
                args=[now, now + int(ttl * 1000), device, user_id],
            )
        )

    async def leave(self, user_id: str, device: str) -> None:
        await self._upgrade()
        now = int(time.time() * 1000)
        b = self._shard(user_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(f"{b}dev:{user_id}", device)
            pipe.zrem(f"{b}all", f"{user_id}|{device}")
            pipe.hset(f"{b}seen", user_id, now)
            await pipe.execute()

    async def settle(self, user_id: str) -> bool:
        await self._upgrade()
        now = int(time.time() * 1000)
        b = self._shard(user_id)
        return bool(await self._settle(keys=[f"{b}dev:{user_id}", f"{b}on"], args=[now, user_id]))

    async def expire(self) -> list[str]:
        """One pipelined look at every shard's earliest expiry, then the sweep script on the
        shards that have a device past it (most sweeps find none)."""
        await self._upgrade()
        now = int(time.time() * 1000)
        bases = [self._base(s) for s in range(SHARDS)]
        async with self.r.pipeline(transaction=False) as pipe:
            for b in bases:
                pipe.zrangebyscore(f"{b}all", "-inf", now, start=0, num=1)
            due = await pipe.execute()
        gone: list[str] = []
        for b, first in zip(bases, due, strict=True):
            if first:
                users = await self._expire(
                    keys=[f"{b}all", f"{b}on", f"{b}seen"], args=[now, f"{b}dev:"]
                )
                gone += [str(u) for u in users]
        return gone

    async def statuses(self, user_ids: list[str]) -> list[Status]:
        await self._upgrade()
        now = int(time.time() * 1000)
        shards: dict[str, list[str]] = {}
        for u in user_ids:
            shards.setdefault(self._shard(u), []).append(u)
        async with self.r.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.zcount(f"{self._shard(u)}dev:{u}", now, "+inf")
            for b, users in shards.items():
                pipe.hmget(f"{b}seen", users)
                pipe.smismember(f"{b}inv", users)
            replies = await pipe.execute()
        counts = dict(zip(user_ids, replies[: len(user_ids)], strict=True))
        seen: dict[str, str | None] = {}
        hidden: dict[str, int] = {}
        rest = iter(replies[len(user_ids) :])
        for users in shards.values():
            seen.update(zip(users, next(rest), strict=True))
            hidden.update(zip(users, next(rest), strict=True))
        out = []
        for u in user_ids:
            if hidden[u]:
                out.append(Status(u, False, None))
            else:
                s = seen[u]
                out.append(Status(u, counts[u] > 0, int(s) / 1000 if s else None))
        return out

    async def set_invisible(self, user_id: str, invisible: bool) -> None:
        await self._upgrade()
        key = f"{self._shard(user_id)}inv"
        if invisible:
            await self.r.sadd(key, user_id)
        else:
            await self.r.srem(key, user_id)

    async def invisible(self, user_id: str) -> bool:
        await self._upgrade()
        return bool(await self.r.sismember(f"{self._shard(user_id)}inv", user_id))

    async def forget(self, user_id: str) -> int:
        """Everything about the user (in one slot, their shard's); returns the devices that
        were still in the shard's expiry set."""
        await self._upgrade()
        b, mine = self._shard(user_id), user_id + "|"
        members = [
            m
            async for m, _ in self.r.zscan_iter(f"{b}all", count=1000)
            if m.startswith(mine) and "|" not in m[len(mine) :]
        ]
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(f"{b}dev:{user_id}")
            pipe.hdel(f"{b}on", user_id)
            pipe.hdel(f"{b}seen", user_id)
            pipe.srem(f"{b}inv", user_id)
            if members:
                pipe.zrem(f"{b}all", *members)
            replies = await pipe.execute()
        return int(replies[4]) if members else 0
