"""The send limits in Redis, shared by every process that sends with one bot token. Same rules
as `limiter.MemoryLimiter`; Redis' own clock (TIME) is the one clock, and each decision is one
Lua script, so two processes never take the same slot.

Every key of one bot shares one hash tag, so on a Redis Cluster they sit in one hash slot: each
decision weighs the bot-wide window (Telegram's 30 a second is per token: one object) together
with the chat's key, in one script. A per-chat tag would split what must be decided together;
one slot per bot costs little (two calls per send, at most 30 sends a second).

Keys (`{<redis_prefix>:tg:<bot id>}`, the tag):
  :inflight   zset token -> lease expiry (a crashed sender's slot frees after the lease)
  :done       zset token -> when the slot frees (answer time + window)
  :chat:<id>  "L<expiry>" while a send to the chat is in flight, else when it may receive again
"""

from __future__ import annotations

import uuid
from typing import Any

from bots.limiter import POLL, Admission, SendLimiter
from server.redis_client import tag

ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local chat = redis.call('GET', KEYS[3])
if chat then
  if string.sub(chat, 1, 1) == 'L' then return {'chat', ARGV[4]} end
  local free = tonumber(chat)
  if free > now then return {'chat', tostring(free - now)} end
end
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= limit then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] then return {'global', tostring(tonumber(first[2]) - now)} end
  return {'global', ARGV[4]}
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
redis.call('SET', KEYS[3], 'L' .. tostring(now + lease), 'PX', math.ceil(lease * 1000))
return {'ok', '0'}
"""

RELEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local window, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
  redis.call('ZADD', KEYS[2], now + window, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
  redis.call('SET', KEYS[3], tostring(now + cooldown), 'PX', math.ceil(cooldown * 1000) + 1)
else
  redis.call('DEL', KEYS[3])
end
return 1
"""


class RedisLimiter(SendLimiter):
    def __init__(
        self,
        redis: Any,
        prefix: str,
        per_window: int = 30,
        window: float = 1.0,
        chat_interval: float = 1.0,
        lease: float = 60.0,
    ) -> None:
        super().__init__(per_window, window, chat_interval)
        self.redis = redis  # the process's shared client (closed by the node)
        self.prefix = tag(prefix)  # `prefix` names the bot: `<redis_prefix>:tg:<bot id>`
        self.lease = lease
        self._acquire = self.redis.register_script(ACQUIRE_LUA)
        self._release = self.redis.register_script(RELEASE_LUA)

    def _keys(self, chat_id: int) -> list[str]:
        return [f"{self.prefix}:inflight", f"{self.prefix}:done", f"{self.prefix}:chat:{chat_id}"]

    async def close(self) -> None:
        """Nothing to release: the Redis client is the node's shared one (the node closes it)."""

    async def forget_chat(self, chat_id: int) -> int:
        return int(await self.redis.delete(self._keys(chat_id)[2]))

    async def acquire(self, chat_id: int) -> Admission:
        token = uuid.uuid4().hex
        scope, wait = await self._acquire(
            keys=self._keys(chat_id), args=[self.per_window, self.lease, token, POLL]
        )
        if scope == "ok":
            return Admission(True, 0.0, "ok", token)
        return Admission(False, max(float(wait), 0.0), scope)

    async def release(
        self, chat_id: int, token: str, *, used: bool = True, retry_after: float = 0.0
    ) -> None:
        await self._release(
            keys=self._keys(chat_id),
            args=[token, "1" if used else "0", self.window, self.cooldown(retry_after)],
        )
