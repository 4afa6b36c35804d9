"""Presence in Redis: the same contract as MemoryPresence, shared by every process.

Keys under `<prefix>:pres:`:
  dev:<user>   ZSET device -> expiry (ms)         who is connected, per user
  all          ZSET "<user>|<device>" -> expiry   for the expiry sweep (crashed nodes)
  on           HASH user -> "1"                   announced online (so changes are told once)
  seen         HASH user -> last seen (ms)
  inv          SET users shown offline to others
"""

from __future__ import annotations

import time
from typing import Any

from presence.backend import Status

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

EXPIRE = """
local now = tonumber(ARGV[1])
local gone = {}
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(members) do
  redis.call('ZREM', KEYS[1], m)
  local sep = string.find(m, '|', 1, true)
  local user = string.sub(m, 1, sep - 1)
  local dev = string.sub(m, sep + 1)
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
        self.p = f"{prefix}:pres:"
        self._touch = redis.register_script(TOUCH)
        self._settle = redis.register_script(SETTLE)
        self._expire = redis.register_script(EXPIRE)

    async def touch(self, user_id: str, device: str, ttl: float) -> bool:
        now = int(time.time() * 1000)
        p = self.p
        return bool(
            await self._touch(
                keys=[f"{p}dev:{user_id}", f"{p}all", f"{p}on", f"{p}seen"],
                args=[now, now + int(ttl * 1000), device, user_id],
            )
        )

    async def leave(self, user_id: str, device: str) -> None:
        now = int(time.time() * 1000)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(f"{self.p}dev:{user_id}", device)
            pipe.zrem(f"{self.p}all", f"{user_id}|{device}")
            pipe.hset(f"{self.p}seen", user_id, now)
            await pipe.execute()

    async def settle(self, user_id: str) -> bool:
        now = int(time.time() * 1000)
        return bool(
            await self._settle(keys=[f"{self.p}dev:{user_id}", f"{self.p}on"], args=[now, user_id])
        )

    async def expire(self) -> list[str]:
        now = int(time.time() * 1000)
        gone = await self._expire(
            keys=[f"{self.p}all", f"{self.p}on", f"{self.p}seen"], args=[now, f"{self.p}dev:"]
        )
        return [str(u) for u in gone]

    async def statuses(self, user_ids: list[str]) -> list[Status]:
        now = int(time.time() * 1000)
        async with self.r.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.zcount(f"{self.p}dev:{u}", now, "+inf")
            pipe.hmget(f"{self.p}seen", user_ids)
            pipe.smismember(f"{self.p}inv", user_ids)
            *counts, seen, inv = await pipe.execute()
        out = []
        for u, n, s, hidden in zip(user_ids, counts, seen, inv, strict=True):
            if hidden:
                out.append(Status(u, False, None))
            else:
                out.append(Status(u, n > 0, int(s) / 1000 if s else None))
        return out

    async def set_invisible(self, user_id: str, invisible: bool) -> None:
        if invisible:
            await self.r.sadd(f"{self.p}inv", user_id)
        else:
            await self.r.srem(f"{self.p}inv", user_id)

    async def invisible(self, user_id: str) -> bool:
        return bool(await self.r.sismember(f"{self.p}inv", user_id))

    async def forget(self, user_id: str) -> int:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.p}dev:{user_id}")
            pipe.hdel(f"{self.p}on", user_id)
            pipe.hdel(f"{self.p}seen", user_id)
            pipe.srem(f"{self.p}inv", user_id)
            await pipe.execute()
        # the expiry index holds "<user>|<device>" members
        removed = 0
        async for member, _ in self.r.zscan_iter(f"{self.p}all", match=f"{user_id}|*"):
            removed += int(await self.r.zrem(f"{self.p}all", member))
        return removed
