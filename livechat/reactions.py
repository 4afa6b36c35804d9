"""Reaction bursts: `reaction:send` only counts; a flusher per room sends the counts gathered
since its last flush as one `reaction:burst`, at most once per `BURST_INTERVAL` per room, so a
thousand hearts cost a few frames. Backends side by side: `MemoryReactions` (one process) here,
`RedisReactions` (counts in a Redis hash, one flusher per room cluster-wide) in
reactions_redis.py. A flusher runs only while its room has reactions coming in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, get_args

from server import errors

log = logging.getLogger("ours.livechat")

Kind = Literal["heart", "fire", "clap", "laugh", "wow"]
KINDS: tuple[str, ...] = get_args(Kind)
BURST_INTERVAL = 0.25  # seconds: at most 4 bursts a second per room

#: sends one burst: (live_id, {kind: count})
Flush = Callable[[str, dict[str, int]], Awaitable[None]]


class Reactions(Protocol):
    async def add(self, live_id: str, kind: str) -> None: ...

    async def close(self) -> None: ...


class MemoryReactions:
    def __init__(self, flush: Flush, interval: float = BURST_INTERVAL) -> None:
        self._flush = flush
        self.interval = interval
        self._counts: dict[str, Counter[str]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def add(self, live_id: str, kind: str) -> None:
        self._counts.setdefault(live_id, Counter())[kind] += 1
        if live_id not in self._flushers:
            self._flushers[live_id] = asyncio.create_task(
                self._run(live_id), name=f"reactions:{live_id}"
            )

    async def _run(self, live_id: str) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                counts = self._counts.pop(live_id, None)
                if not counts:  # nothing since the last burst: stop until the next reaction
                    break
                try:
                    await self._flush(live_id, dict(counts))
                except Exception as exc:
                    errors.log_failure(log, "reaction burst failed", exc, live_id=live_id)
        finally:
            self._flushers.pop(live_id, None)

    async def close(self) -> None:
        tasks = list(self._flushers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
