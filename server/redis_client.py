"""One way to open Redis: a blocking pool (callers wait for a free connection instead of
failing with "Too many connections" under bursts), string replies, and a short retry so that
a Redis that is down fails a call within about a second (the caller answers `unavailable`)
instead of redis-py's default of ten backed-off retries."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


def options() -> dict[str, Any]:
    """Connection options of every Redis client of the process (python-socketio's too)."""
    return {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
        "socket_connect_timeout": 2,
        "health_check_interval": 10,
    }


def connect(url: str, max_connections: int = 64) -> Any:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, decode_responses=True, **options()
    )
    return aioredis.Redis(connection_pool=pool)
