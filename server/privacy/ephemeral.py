"""A user's traces outside PostgreSQL, by key layout (each module that writes them documents it):

  <prefix>:bucket:u:<id>[:<event>]        rate-limit buckets (server/ratelimit.py)
  <prefix>:rl:<ns>:user:<id>[:epoch]      their user room's log (server/roomlog_redis.py)
  <prefix>:rl:<ns>:<room>                 entries of shared rooms' logs that name them
  <prefix>:pres:...                       presence (server/presence_redis.py `forget`, and
                                          the "<id>|<device>" members of its expiry index)
  <prefix>:chat:{<live>}:last:<id>        live-chat slow-mode marks (server/livechat/gate_redis.py)
  {<prefix>:tg:<bot>}:chat:<chat id>      Telegram send limits of their linked chat (bots/)

Live-chat caches of the lives they were restricted in or hosted are invalidated (reloaded from
PostgreSQL). Not touched: the bus stream `<prefix>:events` (and its DLQ), a transport buffer
trimmed by MAXLEN whose durable copy, the `events` table, is anonymized — deleting entries under
consumer groups would break redelivery; and the in-process room log of the embedded default
(process memory, a 2-minute window).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from server.ratelimit import MemoryLimiter

if TYPE_CHECKING:
    from server.node import Node
    from server.privacy.erase import Erased


def names(user_id: str) -> re.Pattern[str]:
    """A JSON string that is the id or its user room (not a number or a word in a text)."""
    return re.compile(r'"(user:)?' + re.escape(user_id) + '"')


async def forget(node: Node, redis: Any, user_id: str, erased: Erased) -> int:
    """Remove what Redis and this process hold about the user; return the keys deleted."""
    removed = 0
    if redis is not None:
        removed += await _redis_keys(redis, node.settings.redis_prefix, user_id, erased)
    elif isinstance(node.limits.limiter, MemoryLimiter):
        limiter = node.limits.limiter
        await limiter.forget(f"u:{user_id}:")  # per-event buckets
        limiter._buckets.pop(f"u:{user_id}", None)  # the user's own (forget() is by prefix)
    presence = node.features.get("presence")
    if presence is not None:
        await presence.service.store.forget(user_id)  # type: ignore[attr-defined]
    livechat = node.features.get("livechat")
    gate = getattr(getattr(livechat, "service", None), "gate", None)
    if gate is not None:
        for live_id in erased.lives:
            await gate.invalidate(live_id)
    return removed


async def _redis_keys(redis: Any, prefix: str, user_id: str, erased: Erased) -> int:
    patterns = [
        f"{prefix}:bucket:u:{user_id}",
        f"{prefix}:bucket:u:{user_id}:*",
        f"{prefix}:rl:*:user:{user_id}",
        f"{prefix}:rl:*:user:{user_id}:epoch",
        f"{prefix}:chat:*:last:{user_id}",
        *(f"{{{prefix}:tg:*}}:chat:{chat}" for chat in erased.chat_ids),
    ]
    removed = 0
    for pattern in patterns:
        keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
        if keys:
            removed += int(await redis.delete(*keys))
    # presence's expiry index holds "<user>|<device>" members (server/presence_redis.py)
    async for member, _ in redis.zscan_iter(f"{prefix}:pres:all", match=f"{user_id}|*"):
        removed += int(await redis.zrem(f"{prefix}:pres:all", member))
    # entries of shared rooms' logs (conversations, audio rooms, ...) that name them
    named = names(user_id)
    async for key in redis.scan_iter(match=f"{prefix}:rl:*", count=1000, _type="stream"):
        ids = [i for i, fields in await redis.xrange(key) if named.search(fields.get("m", ""))]
        if ids:
            await redis.xdel(key, *ids)
    return removed
