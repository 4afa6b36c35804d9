"""One way to open Redis: a blocking pool (callers wait for a free connection instead of
failing with "Too many connections" under bursts), string replies."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def connect(url: str, max_connections: int = 64) -> Any:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, decode_responses=True
    )
    return aioredis.Redis(connection_pool=pool)
