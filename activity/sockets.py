"""Activity-stream events on /feed (seed 000): opt in or out, share what you are doing (the ack
says how many others share the same thing today), list and delete your entries. Match
notifications arrive on /notifications as `notification:new` of kind `match`."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.auth import Principal
from server.contract import Outgoing
from server.errors import Code
from server.sockets import NoPayload, handles

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


# -- acks -------------------------------------------------------------------------------------


class ActivityOptedIn(Outgoing):
    enabled: bool = Field(description="whether the user now shares activities")
    matches: bool = Field(description="whether `match` notifications are now on")
    removed: int = Field(description="entries deleted by opting out (0 when opting in)")


class ActivityEntry(Outgoing):
    """One of the user's activities, with how many others share the same thing today."""

    id: str = Field(description="the entry's id (a UUID): `id` of activity:delete")
    kind: Kind
    text: str
    created_at: str = Field(description="ISO 8601")
    expires_at: str = Field(description="ISO 8601: 24 hours after it was shared")
    similar: int = Field(description="other people sharing the same thing in the last 24 hours")
    label: str = Field(description='the same, said: "only one", "1 other", "N others"')


class ActivityStatus(Outgoing):
    enabled: bool = Field(description="whether the user opted in")
    opted_in_at: str | None = Field(description="when (ISO 8601); null when not opted in")
    matches: bool = Field(description="whether `match` notifications are on")
    entries: list[ActivityEntry] = Field(description="the user's unexpired activities")


class ActivityDeleted(Outgoing):
    id: str
    deleted: Literal[True]


class ActivityHandlers:
    """Mixin of /feed: one thin handler per activity event."""

    if TYPE_CHECKING:
        node: Node

    activity: Activity  # handed in by the namespace (namespaces/feed.py)

    @handles(
        "activity:optin", OptIn, ack=ActivityOptedIn, example={"enabled": True, "matches": True}
    )
    async def activity_optin(self, sid: str, principal: Principal, req: OptIn) -> Any:
        """Opt in to activity sharing, or out (which deletes every entry at once)."""
        return await self.activity.set_optin(principal.user_id, req.enabled, req.matches)

    @handles("activity:status", ack=ActivityStatus)
    async def activity_status(self, sid: str, principal: Principal, req: NoPayload) -> Any:
        """Read your opt-in, your match-notification setting and your unexpired activities."""
        return await self.activity.status(principal.user_id)

    @handles(
        "activity:share",
        Share,
        ack=ActivityEntry,
        errors=(Code.FORBIDDEN,),
        example={"text": "listening to Kind of Blue", "kind": "listening"},
    )
    async def activity_share(self, sid: str, principal: Principal, req: Share) -> Any:
        """Share what you are doing for 24 hours; the ack says how many others share it.

        Needs activity:optin first (forbidden); at most 100 a day (rate_limited)."""
        return await self.activity.share(principal.user_id, req.kind, req.text)

    @handles(
        "activity:delete",
        EntryRef,
        ack=ActivityDeleted,
        errors=(Code.NOT_FOUND,),
        example={"id": "<activity_id>"},
    )
    async def activity_delete(self, sid: str, principal: Principal, req: EntryRef) -> Any:
        """Delete one of your activities now."""
        return await self.activity.delete(principal.user_id, str(req.id))
