"""/feed: live feed updates. Clients join zone:, content: and live: rooms; `content.*` and
`governance.*` events are fanned out here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from activity.service import Activity
from activity.sockets import ActivityHandlers
from server.auth import Principal
from server.contract import Outgoing
from server.errors import Code
from server.node import Node
from server.sockets import RoomsNamespace, handles

Zone = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class ZonesReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zones: Annotated[list[Zone], Field(max_length=50)]


class FeedSubscribed(Outgoing):
    zones: list[str] = Field(description="the socket's zones now, sorted")
    offsets: dict[str, str] = Field(
        description="each zone room's newest offset (`zone:<name>` -> offset), for a later"
        " room:join with `since`"
    )


class FeedNamespace(ActivityHandlers, RoomsNamespace):
    def __init__(
        self, node: Node, activity: Activity, viewed: Callable[[str], Awaitable[None]]
    ) -> None:
        super().__init__("/feed", node, viewed)
        self.activity = activity

    @handles(
        "feed:subscribe",
        ZonesReq,
        ack=FeedSubscribed,
        errors=(Code.FORBIDDEN,),
        example={"zones": ["music", "tech"]},
    )
    async def feed_subscribe(self, sid: str, p: Principal, req: ZonesReq) -> Any:
        """Set this socket's zones at once: join the new ones, leave the others."""
        wanted = {f"zone:{z}" for z in req.zones}
        current = {r for r in self.rooms_of(sid) if r.startswith("zone:")}
        for room in current - wanted:
            await self.leave_room(sid, room)
        for room in sorted(wanted - current):
            await self.join_checked(sid, p, room)
        offsets = {r: await self.node.fanout.current_offset(self.namespace, r) for r in wanted}
        return {"zones": sorted(req.zones), "offsets": offsets}
