"""Watching-now counts in Redis: a hash of node -> count per room, a sorted set of live nodes,
and a hash of counters per content.

Keys under `<prefix>:watch:`:
  nodes          ZSET node id -> its last tick (ms): the nodes whose counts are summed
  cnt:<room>     HASH node id -> sockets of the room on that node
  ctr:<content>  HASH views, tips, reactions, v (a version, bumped by every change)

No script or transaction touches two keys, so none needs a hash tag: on a Redis Cluster the
per-room and per-content keys spread over the slots by their names, and the pipelines (many
rooms at once) are split per node by the cluster client. `nodes` is one key on purpose: it is
the one list of live nodes, written once a second by each node.
"""

from __future__ import annotations

import time
from typing import Any

from watching.counts import NODE_TTL_MS


class RedisCounts:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.r = redis
        self.p = f"{prefix}:watch:"

    async def publish_local(self, node_id: str, counts: dict[str, int]) -> None:
        now = int(time.time() * 1000)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(f"{self.p}nodes", {node_id: now})
            for room, n in counts.items():
                if n:
                    pipe.hset(f"{self.p}cnt:{room}", node_id, n)
                    pipe.pexpire(f"{self.p}cnt:{room}", 60_000)
                else:
                    pipe.hdel(f"{self.p}cnt:{room}", node_id)
            await pipe.execute()

    async def totals(self, rooms: list[str]) -> dict[str, int]:
        if not rooms:
            return {}
        alive_since = int(time.time() * 1000) - NODE_TTL_MS
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(f"{self.p}nodes", alive_since, "+inf")
            for room in rooms:
                pipe.hgetall(f"{self.p}cnt:{room}")
            alive, *maps = await pipe.execute()
        live = set(alive)
        return {
            room: sum(int(n) for node, n in m.items() if node in live)
            for room, m in zip(rooms, maps, strict=True)
        }

    async def bump(self, content_id: str, field: str, by: float) -> None:
        key = f"{self.p}ctr:{content_id}"
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hincrbyfloat(key, field, by)
            pipe.hincrby(key, "v", 1)
            pipe.expire(key, 7 * 86400)
            await pipe.execute()

    async def counters_of(self, content_ids: list[str]) -> dict[str, dict[str, float]]:
        async with self.r.pipeline(transaction=False) as pipe:
            for i in content_ids:
                pipe.hgetall(f"{self.p}ctr:{i}")
            maps = await pipe.execute()
        out = {}
        for i, m in zip(content_ids, maps, strict=True):
            if m:
                c = {"views": 0.0, "tips": 0.0, "reactions": 0.0, "v": 0.0}
                c.update({k: float(v) for k, v in m.items()})
                out[i] = c
        return out
