"""Watching-now counts and content counters: where they are kept. `MemoryCounts` in one
process; `RedisCounts` (counts_redis.py) across nodes, each node's counts in a hash per room.
Also the two events watching/feature.py pushes: `room:count` and `content:counters`."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from server.contract import Outgoing
from server.server_events import server_event

#: a node that has not ticked for this long drops out of the cluster totals
NODE_TTL_MS = 5000

#: the namespaces whose content: and live: rooms are counted
WATCHED_NAMESPACES = ("/feed", "/live")


class RoomCount(Outgoing):
    room: str = Field(description="a `content:<id>` or `live:<id>` room")
    count: int = Field(description="sockets in the room now, on every node")


class ContentCounters(Outgoing):
    content_id: str
    views: int = Field(description="joins of the content's room counted so far")
    tips: float = Field(description="hours tipped, rounded to 2 decimals")
    reactions: int = Field(description="likes, comments, shares and saves")


ROOM_COUNT = server_event(
    "room:count",
    RoomCount,
    namespaces=WATCHED_NAMESPACES,
    summary="How many are watching a content: or live: room, at most once a second while it"
    " changes (to the room; volatile)",
    example={"room": "live:jazz-night", "count": 128},
)
CONTENT_COUNTERS = server_event(
    "content:counters",
    ContentCounters,
    namespaces=WATCHED_NAMESPACES,
    summary="A content's live counters (views, tips, reactions), at most once a second while"
    " they change (to `content:{id}`; volatile)",
    example={"content_id": "<content_id>", "views": 1042, "tips": 12.5, "reactions": 87},
)


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
