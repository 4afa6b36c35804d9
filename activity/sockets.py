"""Activity-stream events on /feed (seed 000): opt in or out, share what you are doing (the ack
says how many others share the same thing today), list and delete your entries. Match
notifications arrive on /notifications as `notification:new` of kind `match`."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from server.auth import Principal
from server.sockets import handles

if TYPE_CHECKING:
    from activity.service import Activity
    from server.node import Node

Kind = Literal["listening", "watching", "reading", "playing", "eating", "doing"]


class OptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool
    matches: bool | None = None  # match notifications; default: the same as `enabled`


class Share(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, StringConstraints(min_length=1, max_length=280, strip_whitespace=True)]
    kind: Kind = "doing"


class EntryRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: uuid.UUID


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActivityHandlers:
    """Mixin of /feed: one thin handler per activity event."""

    if TYPE_CHECKING:
        node: Node

    activity: Activity  # handed in by the namespace (namespaces/feed.py)

    @handles("activity:optin", OptIn)
    async def activity_optin(self, sid: str, principal: Principal, req: OptIn) -> Any:
        return await self.activity.set_optin(principal.user_id, req.enabled, req.matches)

    @handles("activity:status", Empty)
    async def activity_status(self, sid: str, principal: Principal, req: Empty) -> Any:
        return await self.activity.status(principal.user_id)

    @handles("activity:share", Share)
    async def activity_share(self, sid: str, principal: Principal, req: Share) -> Any:
        return await self.activity.share(principal.user_id, req.kind, req.text)

    @handles("activity:delete", EntryRef)
    async def activity_delete(self, sid: str, principal: Principal, req: EntryRef) -> Any:
        return await self.activity.delete(principal.user_id, str(req.id))
