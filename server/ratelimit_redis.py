"""Rate-limit buckets in Redis: one atomic Lua call takes a token from every bucket a request
or event involves, so every process shares the same buckets."""

from __future__ import annotations

import time
from typing import Any

from server.ratelimit import Bucket, Decision, decide

# one token from each bucket KEYS[i] (limit ARGV[2i], period ARGV[2i+1]); ARGV[1] is now
TAKE_LUA = """
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  local b = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(b[1]) or limit
  local ts = tonumber(b[2]) or now
  tokens = math.min(limit, tokens + (now - ts) * limit / period)
  local ok = 0
  if tokens >= 1 then tokens = tokens - 1; ok = 1 end
  redis.call('HSET', KEYS[i], 't', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(period * 1000))
  out[2 * i - 1] = ok
  out[2 * i] = tostring(tokens)
end
return out
"""


class RedisLimiter:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._take = redis.register_script(TAKE_LUA)

    async def take(self, key: str, limit: int, period: float) -> Decision:
        return (await self.take_many([(key, limit, period)]))[0]

    async def take_many(self, buckets: list[Bucket]) -> list[Decision]:
        """One token from each bucket, in one round trip."""
        args: list[Any] = [time.time()]
        for _, limit, period in buckets:
            args += [limit, period]
        out = await self._take(
            keys=[f"{self.prefix}:bucket:{key}" for key, _, _ in buckets], args=args
        )
        return [
            decide(bool(out[2 * i]), float(out[2 * i + 1]), limit, period)
            for i, (_, limit, period) in enumerate(buckets)
        ]

    async def forget_user(self, user_id: str) -> int:
        own = f"{self.prefix}:bucket:u:{user_id}"
        keys = [own] + [k async for k in self.redis.scan_iter(match=own + ":*", count=1000)]
        return int(await self.redis.delete(*keys))
