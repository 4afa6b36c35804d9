"""Reaction bursts across processes: each reaction is one HINCRBY into the room's Redis hash;
the process whose script call finds the room's lease free takes it and becomes the room's only
flusher. Every `interval` it takes the hash (read and delete, atomically) and sends the burst,
renewing the lease; when a flush finds nothing it gives the lease up in the same script, so a
reaction arriving at that moment either sees the lease taken (and is flushed) or takes it. A
crashed flusher's lease lapses after LEASE_MS and the next reaction takes over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from server.livechat.reactions import BURST_INTERVAL, Flush

log = logging.getLogger("ours.livechat")

LEASE_MS = 2000
COUNTS_TTL_MS = 10_000  # counts no flusher collected (all holders crashed) do not linger

ADD_LUA = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
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

    def _keys(self, live_id: str) -> list[str]:
        base = f"{self.prefix}:react:{{{live_id}}}"
        return [f"{base}:counts", f"{base}:lease"]

    async def add(self, live_id: str, kind: str) -> None:
        holder = await self._add(
            keys=self._keys(live_id), args=[kind, self._token, LEASE_MS, COUNTS_TTL_MS]
        )
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
                except Exception:
                    log.exception("reaction burst failed", extra={"live_id": live_id})
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis unreachable: the lease lapses, a later reaction takes over
            log.exception("reaction flusher stopped", extra={"live_id": live_id})
        finally:
            self._flushers.pop(live_id, None)
            self._again.discard(live_id)

    async def close(self) -> None:
        tasks = list(self._flushers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
