"""Rate-limit buckets in Redis, so every process shares the same buckets: an atomic Lua call
takes a token from every bucket a request or event involves.

Each bucket is its own key, `<prefix>:bucket:{<bucket>}` (`{u:<user id>}`, `{ip:<address>}`,
`{conn:<address>}`, `{key:<api key id>}`, `{hook:<route>}`, `{u:<user id>:<name>}`), tagged by
itself so that the buckets spread over a Redis Cluster's slots. The buckets of one request are
independent (each gives its token or not whatever the others do), so on a cluster they are
taken in one call per bucket, concurrently, with the same clock reading; on one Redis in a
single call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server import redis_client
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
    def __init__(self, redis: Any, prefix: str, *, cluster: bool = False) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cluster = cluster
        self._take = redis.register_script(TAKE_LUA)

    def key(self, bucket: str) -> str:
        return f"{self.prefix}:bucket:" + redis_client.tag(bucket)

    async def take(self, key: str, limit: int, period: float) -> Decision:
        return (await self.take_many([(key, limit, period)]))[0]

    async def take_many(self, buckets: list[Bucket]) -> list[Decision]:
        """One token from each bucket, in one round trip (concurrent ones on a cluster)."""
        now = time.time()
        if self.cluster and len(buckets) > 1:  # one slot per bucket
            parts = await asyncio.gather(*(self._take_all(now, [b]) for b in buckets))
            return [d for part in parts for d in part]
        return await self._take_all(now, buckets)

    async def _take_all(self, now: float, buckets: list[Bucket]) -> list[Decision]:
        """One script call over `buckets` (one slot's on a cluster)."""
        args: list[Any] = [now]
        for _, limit, period in buckets:
            args += [limit, period]
        out = await self._take(keys=[self.key(key) for key, _, _ in buckets], args=args)
        return [
            decide(bool(out[2 * i]), float(out[2 * i + 1]), limit, period)
            for i, (_, limit, period) in enumerate(buckets)
        ]

    async def forget_user(self, user_id: str) -> int:
        """The user's bucket and their per-event ones (`u:<id>:<name>`); on a cluster SCAN
        visits every primary and DELETE is split per slot by the client."""
        own = self.key(f"u:{user_id}")
        events = self.key(f"u:{user_id}:")[:-1] + "*"  # the tag's closing brace after `*`
        keys = [own] + [k async for k in self.redis.scan_iter(match=events, count=1000)]
        return int(await self.redis.delete(*keys))
