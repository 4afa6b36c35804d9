"""Watching now: viewer counts of `content:` and `live:` rooms, cluster-wide, pushed to the
room as `room:count` at most once a second while they change; and per-content live counters
(views, tips, reactions) pushed to `content:{id}` as `content:counters` at most once a second.

Each node counts its own sockets and, with Redis, publishes them per room (a hash of node ->
count; nodes that stop ticking drop out after a few seconds); every node then pushes the
cluster total to its own sockets. Counters are incremented from bus events (consumer group
"counters") and by joins of content rooms (views).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from decimal import Decimal
from typing import Any

from aiohttp import web

from server.errors import ApiError, Code
from server.events import Event
from server.feature import Feature
from server.http_api import envelope
from server.node import Node
from server.rooms import is_room
from watching.counts import Counts

log = logging.getLogger("ours.watching")

NAMESPACES = ("/feed", "/live")
KINDS = ("content:", "live:")
REACTIONS = {"content.liked", "content.commented", "content.shared", "content.saved"}


class Watching(Feature):
    name = "watching"

    def __init__(self, node: Node, backend: Counts) -> None:
        super().__init__(node)
        self.node_id = uuid.uuid4().hex[:12]
        self.backend = backend
        self.interval = 1.0
        self._sent_local: dict[str, int] = {}
        self._pushed: dict[str, int] = {}
        self._pushed_counters: dict[str, float] = {}
        self._ticking = False
        self._views: dict[str, int] = {}
        node.bus.subscribe("counters", self.on_event)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/rooms/{room}/count", self.count_route)

    async def count_route(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        if not room.startswith(KINDS) or not is_room(room):
            raise ApiError(Code.BAD_REQUEST, "counts exist for content:<id> and live:<id> rooms")
        return envelope(request, {"room": room, "count": await self.count(room)})

    async def start(self) -> None:
        if self.node.with_sockets:
            self._ticking = True
            self.node.periodic.every(lambda: self.interval, "watching.tick", self.tick)

    async def stop(self) -> None:
        if self._ticking:  # the node stops the tick; leave the cluster totals at once
            with contextlib.suppress(Exception):
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
