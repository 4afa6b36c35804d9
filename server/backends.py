"""The core's backends, chosen once per process from the settings: the embedded default (an
in-process bus on the embedded PostgreSQL, in-process rate limits and room logs) or Redis (the
bus on Redis Streams, shared limits, the Redis Socket.IO manager with its room logs).

Each interface module (`bus`, `ratelimit`, `managers`' `Delivery`) knows nothing of its
implementations; this is the one place that picks them, the way centrifuge's `NewNode` is handed
a broker. Features' own backends (presence, watching counts, live-chat gates, the bot's send
limiter) are picked beside them in the composition root (`app.py`).

One Redis client per process (`redis_client.connect`: a blocking pool, or a cluster client
when `OURS_REDIS_CLUSTER` is set) is shared by the rate limiter, the room log and every
feature. Two users keep connections of their own: the bus, whose consumers park in blocking
XREADGROUP calls, and python-socketio's pub/sub listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config import Settings
from server import redis_client
from server.bus import Bus
from server.bus_memory import MemoryBus
from server.bus_redis import RedisBus
from server.jsonutil import SocketJSON
from server.managers import LocalManager
from server.managers_redis import RedisManager
from server.ratelimit import Limiter, MemoryLimiter
from server.ratelimit_redis import RedisLimiter
from server.storage import Storage


@dataclass(frozen=True, slots=True)
class Backends:
    redis: Any  # the shared client, None on the embedded default
    bus: Bus
    limiter: Limiter
    manager: Any  # LocalManager | RedisManager (write-only without sockets)


def choose(settings: Settings, storage: Storage, *, with_sockets: bool = True) -> Backends:
    s = settings
    if not s.redis_url:
        return Backends(
            redis=None,
            bus=MemoryBus(storage, max_deliveries=s.bus_max_deliveries),
            limiter=MemoryLimiter(),
            manager=LocalManager(s.recovery_window_s),
        )
    redis = redis_client.connect(s.redis_url, cluster=s.redis_cluster)
    return Backends(
        redis=redis,
        bus=RedisBus(
            s.redis_url,
            stream=s.bus_stream,
            maxlen=s.bus_maxlen,
            visibility_timeout_ms=s.bus_visibility_timeout_ms,
            max_deliveries=s.bus_max_deliveries,
            cluster=s.redis_cluster,
        ),
        limiter=RedisLimiter(redis, s.redis_prefix, cluster=s.redis_cluster),
        # without sockets (`ours worker`): the serving nodes' manager, write-only: room log +
        # ordered publish, the same offsets
        manager=RedisManager(
            s.redis_url,
            channel=s.sio_channel,
            prefix=s.redis_prefix,
            write_only=not with_sockets,
            json=SocketJSON,
            window_s=s.recovery_window_s,
            log_redis=redis,
        ),
    )
