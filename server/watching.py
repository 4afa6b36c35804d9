"""Watching now: viewer counts of `content:` and `live:` rooms, cluster-wide, pushed to the
room as `room:count` at most once a second while they change; and per-content live counters
(views, tips, reactions) pushed to `content:{id}` as `content:counters` at most once a second.

Each node counts its own sockets and, with Redis, publishes them per room (a hash of node ->
count; nodes that stop ticking drop out after a few seconds); every node then pushes the
cluster total to its own sockets. Counters are incremented from bus events (consumer group
"counters") and by joins of content rooms (views).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from server.events import Event
from server.feature import Feature

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.watching")

NAMESPACES = ("/feed", "/live")
KINDS = ("content:", "live:")
NODE_TTL_MS = 5000
REACTIONS = {"content.liked", "content.commented", "content.shared", "content.saved"}


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


class Watching(Feature):
    name = "watching"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.node_id = uuid.uuid4().hex[:12]
        s = node.settings
        if s.redis_url:
            from server import redis_client

            self.backend: MemoryCounts | RedisCounts = RedisCounts(
                redis_client.connect(s.redis_url), s.redis_prefix
            )
        else:
            self.backend = MemoryCounts()
        self.interval = 1.0
        self._sent_local: dict[str, int] = {}
        self._pushed: dict[str, int] = {}
        self._pushed_counters: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._views: dict[str, int] = {}
        node.bus.subscribe("counters", self.on_event)

    async def start(self) -> None:
        if self.node.with_sockets:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            with contextlib.suppress(Exception):  # leave the cluster totals at once
                await self.backend.publish_local(
                    self.node_id, {r: 0 for r, n in self._sent_local.items() if n}
                )

    # -- inputs ---------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        p = event.payload
        content_id = p.get("content_id")
        if not content_id:
            return
        if event.type in REACTIONS:
            await self.backend.bump(content_id, "reactions", 1)
        elif event.type == "hours.tipped":
            await self.backend.bump(content_id, "tips", float(Decimal(str(p["amount"]))))

    async def viewed(self, room: str) -> None:
        """A socket joined a content room: counted now, written with the next tick."""
        if room.startswith("content:"):
            cid = room.removeprefix("content:")
            self._views[cid] = self._views.get(cid, 0) + 1

    async def count(self, room: str) -> int:
        if self.node.settings.redis_url:
            return (await self.backend.totals([room]))[room]
        return self._local_counts().get(room, 0)

    # -- the tick ---------------------------------------------------------------------------

    def _local_counts(self) -> dict[str, int]:
        manager = self.node.fanout.manager
        counts: dict[str, int] = {}
        for ns in NAMESPACES:
            for room, members in manager.rooms.get(ns, {}).items():
                if isinstance(room, str) and room.startswith(KINDS):
                    counts[room] = counts.get(room, 0) + len(members)
        return counts

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("watching tick failed", exc_info=True)

    async def tick(self) -> None:
        views, self._views = self._views, {}
        for cid, n in views.items():
            await self.backend.bump(cid, "views", n)
        local = self._local_counts()
        changed = {r: n for r, n in local.items() if self._sent_local.get(r) != n}
        changed.update({r: 0 for r in self._sent_local if r not in local and self._sent_local[r]})
        if changed or self.node.settings.redis_url:  # with Redis, tick = "this node is alive"
            await self.backend.publish_local(self.node_id, changed)
            self._sent_local.update(changed)
        rooms = list(local)
        totals = await self.backend.totals(rooms)
        for room, total in totals.items():
            if self._pushed.get(room) != total:
                self._pushed[room] = total
                await self._push(room, "room:count", {"room": room, "count": total})
        for room in [r for r in self._pushed if r not in local]:
            del self._pushed[room]
        content = [r.removeprefix("content:") for r in rooms if r.startswith("content:")]
        for cid, c in (await self.backend.counters_of(content)).items():
            room = f"content:{cid}"
            if self._pushed_counters.get(room) != c["v"]:
                self._pushed_counters[room] = c["v"]
                data = {
                    "content_id": cid,
                    "views": int(c["views"]),
                    "tips": round(c["tips"], 2),
                    "reactions": int(c["reactions"]),
                }
                await self._push(room, "content:counters", data)

    async def _push(self, room: str, event: str, data: dict[str, Any]) -> None:
        """To this node's sockets in the room only: every node pushes to its own."""
        manager = self.node.fanout.manager
        eid = uuid.uuid4().hex
        for ns in NAMESPACES:
            await manager.deliver_local(ns, [room], event, data, None, {}, eid)
