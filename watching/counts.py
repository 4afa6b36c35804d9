"""Watching-now counts and content counters: where they are kept. `MemoryCounts` in one
process; `RedisCounts` (counts_redis.py) across nodes, each node's counts in a hash per room."""

from __future__ import annotations

from typing import Protocol

#: a node that has not ticked for this long drops out of the cluster totals
NODE_TTL_MS = 5000


class Counts(Protocol):
    async def publish_local(self, node_id: str, counts: dict[str, int]) -> None: ...

    async def totals(self, rooms: list[str]) -> dict[str, int]: ...

    async def bump(self, content_id: str, field: str, by: float) -> None: ...

    async def counters_of(self, content_ids: list[str]) -> dict[str, dict[str, float]]: ...


class MemoryCounts:
    def __init__(self) -> None:
        self.local: dict[str, int] = {}
        self.counters: dict[str, dict[str, float]] = {}

    async def publish_local(self, node_id: str, counts: dict[str, int]) -> None:
        self.local.update(counts)

    async def totals(self, rooms: list[str]) -> dict[str, int]:
        return {r: self.local.get(r, 0) for r in rooms}

    async def bump(self, content_id: str, field: str, by: float) -> None:
        c = self.counters.setdefault(content_id, {"views": 0, "tips": 0, "reactions": 0, "v": 0})
        c[field] += by
        c["v"] += 1

    async def counters_of(self, content_ids: list[str]) -> dict[str, dict[str, float]]:
        return {i: dict(self.counters[i]) for i in content_ids if i in self.counters}
