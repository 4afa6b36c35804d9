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
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, StringConstraints

from server.events import Event
from server.feature import Feature
from server.http_api import envelope, path_params
from server.node import Node
from server.openapi import operation
from server.server_events import check_emitted
from watching.counts import (
    CONTENT_COUNTERS,
    ROOM_COUNT,
    WATCHED_NAMESPACES,
    Counts,
    RoomCount,
)

log = logging.getLogger("ours.watching")

KINDS = ("content:", "live:")
REACTIONS = {"content.liked", "content.commented", "content.shared", "content.saved"}


class RoomPath(BaseModel):
    room: Annotated[str, StringConstraints(pattern=r"^(content|live):[A-Za-z0-9_.\-]{1,64}$")] = (
        Field(description="content:<id> or live:<id>")
    )


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

    @operation(
        "How many are watching a content or live room now, cluster-wide",
        RoomCount,
        path=RoomPath,
        example={"room": "content:c7", "count": 2},
    )
    async def count_route(self, request: web.Request) -> web.Response:
        """Counts exist for content:<id> and live:<id> rooms; sockets in the room push it as
        `room:count` at most once a second while it changes."""
        room = path_params(request, RoomPath).room
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
        for ns in WATCHED_NAMESPACES:
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
                await self._push(room, ROOM_COUNT, {"room": room, "count": total})
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
                await self._push(room, CONTENT_COUNTERS, data)

    async def _push(self, room: str, event: str, data: dict[str, Any]) -> None:
        """To this node's sockets in the room only: every node pushes to its own."""
        check_emitted(event, data)
        manager = self.node.fanout.manager
        eid = uuid.uuid4().hex
        for ns in WATCHED_NAMESPACES:
            await manager.deliver_local(ns, [room], event, data, None, {}, eid)
