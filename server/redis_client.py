"""One way to open Redis: a blocking pool (callers wait for a free connection instead of
failing with "Too many connections" under bursts), string replies, and a short retry so that
a Redis that is down fails a call within about a second (the caller answers `unavailable`)
instead of redis-py's default of ten backed-off retries.

On a Redis Cluster (`OURS_REDIS_CLUSTER=1`, the URL a seed node) the same call gives redis-py's
cluster client: it learns the slots from the seed, sends each command to the primary of its
key's slot and follows MOVED/ASK and failovers. Every key the server writes carries a hash tag
(`{...}`) chosen so that each script or transaction touches one slot; `tag` builds them."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


def options() -> dict[str, Any]:
    """Connection options of every Redis client of the process (python-socketio's too)."""
    return {
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
        "socket_connect_timeout": 2,
        "health_check_interval": 10,
    }


#: the cluster client has no blocking pool: past its cap on a node a command fails at once
#: (MaxConnectionsError, answered `unavailable`) instead of waiting for a free connection, so its
#: cap per node is this many times the single server's; connections open only as bursts need them
CLUSTER_HEADROOM = 8


def connect(url: str, max_connections: int = 64, *, cluster: bool = False) -> Any:
    """A client of one Redis server, or of a Redis Cluster when `cluster` (then up to
    `max_connections * CLUSTER_HEADROOM` connections per cluster node)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections * CLUSTER_HEADROOM,
            decode_responses=True,
            **options(),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, decode_responses=True, **options()
    )
    return aioredis.Redis(connection_pool=pool)


def tag(*parts: str) -> str:
    """A hash tag: keys that share it sit in one cluster slot (on a single Redis, only a name).
    `{` and `}` inside the parts are replaced, so a room or user id cannot end the tag early."""
    return "{" + ":".join(parts).replace("{", "(").replace("}", ")") + "}"
