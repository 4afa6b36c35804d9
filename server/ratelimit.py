"""Rate limits: token buckets per user and per IP, one mechanism for HTTP and sockets.

A bucket holds `limit` tokens and refills at `limit` per `period` seconds (seed 003: 100/min
per user, 200/min per IP). In-process in the embedded default; with Redis the take is one
atomic Lua call, so every process shares the same buckets.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("ours.ratelimit")

TAKE_LUA = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1]) or limit
local ts = tonumber(b[2]) or now
tokens = math.min(limit, tokens + (now - ts) * limit / period)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(period * 1000))
return {ok, tostring(tokens)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until one token is back (0 when allowed)
    reset: float  # seconds until the bucket is full again


def _decide(ok: bool, tokens: float, limit: int, period: float) -> Decision:
    per_token = period / limit
    retry = 0.0 if ok else max(0.001, (1 - tokens) * per_token)
    return Decision(ok, limit, max(0, math.floor(tokens)), retry, (limit - tokens) * per_token)


class MemoryLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = time.monotonic()

    async def take(self, key: str, limit: int, period: float) -> Decision:
        now = time.monotonic()
        tokens, ts = self._buckets.get(key, (float(limit), now))
        tokens = min(limit, tokens + (now - ts) * limit / period)
        ok = tokens >= 1
        if ok:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if now - self._last_sweep > 60:
            self._sweep(now, period)
        return _decide(ok, tokens, limit, period)

    def _sweep(self, now: float, period: float) -> None:
        self._last_sweep = now
        stale = [k for k, (_, ts) in self._buckets.items() if now - ts > max(period, 600)]
        for k in stale:
            del self._buckets[k]

    async def forget(self, prefix: str) -> None:
        for k in [k for k in self._buckets if k.startswith(prefix)]:
            del self._buckets[k]


class RedisLimiter:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._take = redis.register_script(TAKE_LUA)

    async def take(self, key: str, limit: int, period: float) -> Decision:
        ok, tokens = await self._take(
            keys=[f"{self.prefix}:bucket:{key}"], args=[limit, period, time.time()]
        )
        return _decide(bool(ok), float(tokens), limit, period)

    async def forget(self, prefix: str) -> None:
        async for k in self.redis.scan_iter(match=f"{self.prefix}:bucket:{prefix}*", count=500):
            await self.redis.delete(k)


class RateLimits:
    """The project's limits over one limiter: which buckets a request or event takes from."""

    def __init__(self, settings: Any, limiter: MemoryLimiter | RedisLimiter) -> None:
        self.limiter = limiter
        self.user_limit = settings.rate_user_per_min
        self.ip_limit = settings.rate_ip_per_min
        self.connect_limit = settings.rate_connect_per_min
        self.overrides: dict[str, int] = dict(settings.rate_limits)

    async def check(self, user_id: str | None, ip: str | None, name: str) -> Decision:
        """Take one token from the user's and the IP's buckets (and the route's or event's
        own bucket when configured); the tightest decision wins. If the limiter's store is
        unreachable the request goes through (logged): limits protect, they do not gate."""
        try:
            return await self._check(user_id, ip, name)
        except (OSError, RedisError) as exc:
            log.warning("rate limiter unavailable; allowing", extra={"error": str(exc)})
            return _decide(True, 1, 1, 60)

    async def _check(self, user_id: str | None, ip: str | None, name: str) -> Decision:
        decisions = []
        if user_id is not None:
            decisions.append(await self.limiter.take(f"u:{user_id}", self.user_limit, 60))
            if name in self.overrides:
                decisions.append(
                    await self.limiter.take(f"u:{user_id}:{name}", self.overrides[name], 60)
                )
        if ip:
            decisions.append(await self.limiter.take(f"ip:{ip}", self.ip_limit, 60))
        refused = [d for d in decisions if not d.allowed]
        if refused:
            return max(refused, key=lambda d: d.retry_after)
        return min(decisions, key=lambda d: d.remaining) if decisions else _decide(True, 1, 1, 60)

    async def check_connect(self, ip: str | None) -> Decision:
        if not ip:
            return _decide(True, 1, 1, 60)
        return await self.limiter.take(f"conn:{ip}", self.connect_limit, 60)
