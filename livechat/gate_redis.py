"""The chat gate in Redis: one hash per live holds the cached chat state, one key per user the
last-send mark of slow mode; a send is decided (and marked) in one script call, so every
process sees a ban, a timeout or a user's last send at once. Keys of one live share a hash tag
(`{<live id>}`: one Redis Cluster slot per live, so lives spread over the cluster). Times come
from the Redis clock (TIME), the same for every process.

Keys `<prefix>:chat:{<live id>}:`:
  state        HASH ld, state, slow, host, b:<user> (banned), t:<user> (timed out until, ms)
  gen          the live's generation (bumped by every change; a stale fill is refused)
  last:<user>  the user's last slow-mode send ("<ms>-<token>"), expiring with the slow period
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from livechat.gate import Snapshot, Verdict

STATE_TTL_MS = 3_600_000  # an unused copy goes after an hour (reloaded on the next send)
GEN_TTL_S = 86_400

ADMIT_LUA = """
local s = redis.call('HMGET', KEYS[1], 'ld', 'state', 'slow', 'b:' .. ARGV[1], 't:' .. ARGV[1])
if not s[1] then return {'load'} end
if s[4] then return {'banned'} end
if s[2] ~= 'live' then
  if s[2] == 'ended' then return {'ended'} end
  return {'none'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tu = tonumber(s[5])
if tu and tu > now then return {'timeout', string.format('%d', tu - now)} end
local slow = tonumber(s[3]) or 0
if ARGV[2] ~= '1' or slow <= 0 then return {'ok'} end
local last = redis.call('GET', KEYS[2])
if last then
  local at = tonumber(string.match(last, '^(%d+)'))
  if at and now - at < slow * 1000 then
    return {'slow', string.format('%d', at + slow * 1000 - now)}
  end
end
local stamp = string.format('%d', now) .. '-' .. ARGV[3]
redis.call('SET', KEYS[2], stamp, 'PX', slow * 1000)
return {'ok', '0', stamp}
"""

# ADMIT_LUA for a run of sends in one live: KEYS = state, then each send's last-send key;
# ARGV = take_slot, then (user, token) per send; one reply per send, decided in order
ADMIT_MANY_LUA = """
local st = redis.call('HMGET', KEYS[1], 'ld', 'state', 'slow')
if not st[1] then return {'load'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slow = tonumber(st[3]) or 0
local out = {}
for i = 1, #KEYS - 1 do
  local user = ARGV[2 * i]
  local r = redis.call('HMGET', KEYS[1], 'b:' .. user, 't:' .. user)
  local tu = tonumber(r[2])
  if r[1] then
    out[i] = {'banned'}
  elseif st[2] ~= 'live' then
    if st[2] == 'ended' then out[i] = {'ended'} else out[i] = {'none'} end
  elseif tu and tu > now then
    out[i] = {'timeout', string.format('%d', tu - now)}
  elseif ARGV[1] ~= '1' or slow <= 0 then
    out[i] = {'ok'}
  else
    local last = redis.call('GET', KEYS[i + 1])
    local at = last and tonumber(string.match(last, '^(%d+)'))
    if at and now - at < slow * 1000 then
      out[i] = {'slow', string.format('%d', at + slow * 1000 - now)}
    else
      local stamp = string.format('%d', now) .. '-' .. ARGV[2 * i + 1]
      redis.call('SET', KEYS[i + 1], stamp, 'PX', slow * 1000)
      out[i] = {'ok', '0', stamp}
    end
  end
end
return out
"""

FILL_LUA = """
if (tonumber(redis.call('GET', KEYS[2])) or 0) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

GIVE_BACK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisGate:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(ADMIT_LUA)
        self._admit_many = redis.register_script(ADMIT_MANY_LUA)
        self._fill = redis.register_script(FILL_LUA)
        self._give_back = redis.register_script(GIVE_BACK_LUA)

    def _key(self, live_id: str, part: str) -> str:
        return f"{self.prefix}:chat:{{{live_id}}}:{part}"

    async def admit(self, live_id: str, user_id: str, *, take_slot: bool) -> Verdict | None:
        res = await self._admit(
            keys=[self._key(live_id, "state"), self._key(live_id, f"last:{user_id}")],
            args=[user_id, "1" if take_slot else "0", secrets.token_hex(4)],
        )
        return None if res[0] == "load" else _verdict(res)

    async def admit_many(
        self, live_id: str, user_ids: list[str], *, take_slot: bool
    ) -> list[Verdict] | None:
        args: list[str] = ["1" if take_slot else "0"]
        for user_id in user_ids:
            args += [user_id, secrets.token_hex(4)]
        res = await self._admit_many(
            keys=[self._key(live_id, "state")]
            + [self._key(live_id, f"last:{u}") for u in user_ids],
            args=args,
        )
        if res and res[0] == "load":
            return None
        return [_verdict(r) for r in res]

    async def generation(self, live_id: str) -> int:
        return int(await self.redis.get(self._key(live_id, "gen")) or 0)

    async def fill(self, live_id: str, gen: int, snap: Snapshot) -> None:
        fields: list[str] = ["ld", "1", "state", snap.state, "slow", str(snap.slow_s)]
        if snap.host_id:
            fields += ["host", snap.host_id]
        for user in snap.bans:
            fields += [f"b:{user}", "1"]
        for user, until in snap.timeouts.items():
            fields += [f"t:{user}", str(until)]
        await self._fill(
            keys=[self._key(live_id, "state"), self._key(live_id, "gen")],
            args=[gen, STATE_TTL_MS, *fields],
        )

    async def invalidate(self, live_id: str) -> None:
        gen_key = self._key(live_id, "gen")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(gen_key)
            pipe.expire(gen_key, GEN_TTL_S)
            pipe.delete(self._key(live_id, "state"))
            await pipe.execute()

    async def forget_user(self, user_id: str) -> int:
        """The user's marks in every live: on a cluster SCAN goes to every primary and the
        DEL is split per slot (redis-py's cluster client does both)."""
        pattern = self._key("*", f"last:{glob_escape(user_id)}")
        keys = [k async for k in self.redis.scan_iter(match=pattern, count=1000)]
        return int(await self.redis.delete(*keys)) if keys else 0

    async def give_back(self, live_id: str, user_id: str, stamp: str) -> None:
        await self._give_back(keys=[self._key(live_id, f"last:{user_id}")], args=[stamp])


def glob_escape(text: str) -> str:
    """`text` matched literally in a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _verdict(res: list[Any]) -> Verdict:
    outcome = res[0]
    if outcome in ("slow", "timeout"):
        return Verdict(outcome, int(res[1]) / 1000)
    if outcome == "ok":
        return Verdict("ok", stamp=res[2] if len(res) > 2 else None)
    return Verdict(outcome)
