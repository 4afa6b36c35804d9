"""Rate limits: token buckets per user and per IP, one mechanism for HTTP and sockets.

A bucket holds `limit` tokens and refills at `limit` per `period` seconds (seed 003: 100/min
per user, 200/min per IP). In-process in the embedded default; with Redis one atomic Lua call
(`ratelimit_redis`) takes from every bucket a request or event involves, so every process
shares the same buckets.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from server import errors, logs

log = logging.getLogger("ours.ratelimit")

#: (bucket key, limit, period in seconds)
Bucket = tuple[str, int, float]


class Limiter(Protocol):
    """Token buckets: in-process (`MemoryLimiter`) or shared in Redis (`ratelimit_redis`)."""

    async def take(self, key: str, limit: int, period: float) -> Decision: ...

    async def take_many(self, buckets: list[Bucket]) -> list[Decision]: ...

    async def forget_user(self, user_id: str) -> int:
        """Drop the user's buckets (`u:<id>` and `u:<id>:<event>`); return how many."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until one token is back (0 when allowed)
    reset: float  # seconds until the bucket is full again


def decide(ok: bool, tokens: float, limit: int, period: float) -> Decision:
    per_token = period / limit
    retry = 0.0 if ok else max(0.001, (1 - tokens) * per_token)
    return Decision(ok, limit, max(0, math.floor(tokens)), retry, (limit - tokens) * per_token)


class MemoryLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = time.monotonic()

    async def take(self, key: str, limit: int, period: float) -> Decision:
        return (await self.take_many([(key, limit, period)]))[0]

    async def take_many(self, buckets: list[Bucket]) -> list[Decision]:
        return [self._take(key, limit, period) for key, limit, period in buckets]

    def _take(self, key: str, limit: int, period: float) -> Decision:
        now = time.monotonic()
        tokens, ts = self._buckets.get(key, (float(limit), now))
        tokens = min(limit, tokens + (now - ts) * limit / period)
        ok = tokens >= 1
        if ok:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if now - self._last_sweep > 60:
            self._sweep(now, period)
        return decide(ok, tokens, limit, period)

    def _sweep(self, now: float, period: float) -> None:
        self._last_sweep = now
        stale = [k for k, (_, ts) in self._buckets.items() if now - ts > max(period, 600)]
        for k in stale:
            del self._buckets[k]

    async def forget_user(self, user_id: str) -> int:
        own = f"u:{user_id}"
        keys = [k for k in self._buckets if k == own or k.startswith(own + ":")]
        for k in keys:
            del self._buckets[k]
        return len(keys)


class RateLimits:
    """The project's limits over one limiter: which buckets a request or event takes from."""

    def __init__(self, settings: Any, limiter: Limiter) -> None:
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
        except errors.REDIS_ERRORS as exc:
            if logs.now_and_then("down:limiter"):
                log.warning("rate limiter unavailable; allowing", extra={"error": str(exc)})
            return decide(True, 1, 1, 60)

    async def _check(self, user_id: str | None, ip: str | None, name: str) -> Decision:
        buckets: list[Bucket] = []
        if user_id is not None:
            buckets.append((f"u:{user_id}", self.user_limit, 60))
            if name in self.overrides:
                buckets.append((f"u:{user_id}:{name}", self.overrides[name], 60))
        if ip:
            buckets.append((f"ip:{ip}", self.ip_limit, 60))
        decisions = await self.limiter.take_many(buckets) if buckets else []
        refused = [d for d in decisions if not d.allowed]
        if refused:
            return max(refused, key=lambda d: d.retry_after)
        return min(decisions, key=lambda d: d.remaining) if decisions else decide(True, 1, 1, 60)

    async def check_connect(self, ip: str | None) -> Decision:
        if not ip:
            return decide(True, 1, 1, 60)
        return await self.limiter.take(f"conn:{ip}", self.connect_limit, 60)
