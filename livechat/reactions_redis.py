"""Reaction bursts across processes: each process gathers a room's reactions for PUSH_INTERVAL
and adds them to the room's Redis hash in one script call (HINCRBY per kind); the process whose
call finds the room's lease free takes it and becomes the room's only flusher. Every `interval`
it takes the hash (read and delete, atomically) and sends the burst, renewing the lease; when a
flush finds nothing it gives the lease up in the same script, so an add arriving at that moment
either sees the lease taken (and is flushed) or takes it. A crashed flusher's lease lapses after
LEASE_MS and the next add takes over (reactions a crashed process had gathered but not pushed are
lost: they are ephemeral).

Keys `<prefix>:react:{<live id>}:counts` (HASH kind -> count) and `:lease` (the flusher's token):
one hash tag per live, so each script touches one Redis Cluster slot and lives spread.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from typing import Any

from livechat.reactions import BURST_INTERVAL, Flush
from server import errors

log = logging.getLogger("ours.livechat")

LEASE_MS = 2000
COUNTS_TTL_MS = 10_000  # counts no flusher collected (all holders crashed) do not linger
PUSH_INTERVAL = 0.05  # a process adds a room's reactions to Redis at most this often

ADD_LUA = """
for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""

FLUSH_LUA = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'lost'} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return {'idle'}
end
local counts = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {'counts', counts}
"""


class RedisReactions:
    def __init__(
        self, redis: Any, prefix: str, flush: Flush, interval: float = BURST_INTERVAL
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.interval = interval
        self._flush = flush
        self._token = secrets.token_hex(8)  # this process, as a lease holder
        self._add = redis.register_script(ADD_LUA)
        self._take = redis.register_script(FLUSH_LUA)
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # rooms whose lease an add took while a flusher ran
        self._gathered: dict[str, Counter[str]] = {}
        self._pushers: dict[str, asyncio.Task[None]] = {}

    def _keys(self, live_id: str) -> list[str]:
        base = f"{self.prefix}:react:{{{live_id}}}"
        return [f"{base}:counts", f"{base}:lease"]

    async def add(self, live_id: str, kind: str) -> None:
        self._gathered.setdefault(live_id, Counter())[kind] += 1
        if live_id not in self._pushers:
            self._pushers[live_id] = asyncio.create_task(
                self._push(live_id), name=f"reactions-push:{live_id}"
            )

    async def _push(self, live_id: str) -> None:
        """After PUSH_INTERVAL, add what this process gathered for the room to Redis."""
        try:
            await asyncio.sleep(PUSH_INTERVAL)
        finally:
            self._pushers.pop(live_id, None)
        counts = self._gathered.pop(live_id, None)
        if not counts:
            return
        args: list[Any] = [self._token, LEASE_MS, COUNTS_TTL_MS]
        for kind, n in counts.items():
            args += [kind, n]
        try:
            holder = await self._add(keys=self._keys(live_id), args=args)
        except Exception as exc:
            errors.log_failure(log, "reactions not pushed", exc, live_id=live_id)
            return
        if not holder:
            return
        if live_id in self._flushers:
            self._again.add(live_id)  # the running flusher may be giving up: it goes on
        else:
            self._flushers[live_id] = asyncio.create_task(
                self._run(live_id), name=f"reactions:{live_id}"
            )

    async def _run(self, live_id: str) -> None:
        keys = self._keys(live_id)
        try:
            while True:
                await asyncio.sleep(self.interval)
                self._again.discard(live_id)
                res = await self._take(keys=keys, args=[self._token, LEASE_MS])
                if res[0] != "counts":  # idle (lease given up) or lost (another took over)
                    if live_id in self._again:  # ...but an add meanwhile may hold it again
                        continue
                    break
                flat = res[1]
                counts = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
                try:
                    await self._flush(live_id, counts)
                except Exception as exc:
                    errors.log_failure(log, "reaction burst failed", exc, live_id=live_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis unreachable: the lease lapses, a later one takes over
            errors.log_failure(log, "reaction flusher stopped", exc, live_id=live_id)
        finally:
            self._flushers.pop(live_id, None)
            self._again.discard(live_id)

    async def close(self) -> None:
        tasks = [*self._pushers.values(), *self._flushers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
