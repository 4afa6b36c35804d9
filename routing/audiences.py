"""Audiences: recipient lists the platform registers and updates over HTTP, then names in an
event (`"audience": "<id>"` in POST /v1/events) to notify them all with one event. The router
expands the audience page by page as it routes, with the same preferences, caps and
idempotency per (event, recipient) as for listed recipients.

Members change in pages of at most MAX_CHANGE ids per request (add and remove each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from routing.store.audiences import AudienceStore
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.events import Id

MAX_CHANGE = 450  # ids added (and removed) per request: both at 64 characters fit 64 KiB
MAX_PAGE = 10_000  # members read per request

Members = Annotated[list[Id], Field(max_length=MAX_CHANGE)]


class MembersChange(BaseModel):
    """PATCH /v1/audiences/{audience_id}/members: who joins and who leaves (removals first)."""

    model_config = ConfigDict(extra="forbid")

    add: Members = Field([], description=f"user ids to add (at most {MAX_CHANGE})")
    remove: Members = Field([], description=f"user ids to remove (at most {MAX_CHANGE})")


class AudienceChanged(Outgoing):
    audience_id: str
    added: int = Field(description="ids that were not members yet")
    removed: int = Field(description="ids that were members")
    members: int = Field(description="the audience's members now")


class AudienceInfo(Outgoing):
    audience_id: str
    members: int


class AudiencePage(Outgoing):
    audience_id: str
    members: list[str] = Field(description="in user-id order")
    next: str | None = Field(description="`after` of the next page; null on the last one")


class AudienceDeleted(Outgoing):
    deleted: bool


@dataclass(eq=False)
class Audiences:
    store: AudienceStore

    async def change(self, audience_id: str, change: MembersChange) -> dict[str, Any]:
        add = list(dict.fromkeys(change.add))
        remove = list(dict.fromkeys(change.remove))
        added, removed, total = await self.store.change(audience_id, add, remove)
        return {
            "audience_id": audience_id,
            "added": added,
            "removed": removed,
            "members": total,
        }

    async def info(self, audience_id: str) -> dict[str, Any]:
        size = await self.store.size(audience_id)
        if size is None:
            raise ApiError(Code.NOT_FOUND, "no such audience")
        return {"audience_id": audience_id, "members": size}

    async def page(self, audience_id: str, after: str, limit: int) -> dict[str, Any]:
        await self.info(audience_id)
        members = await self.store.page(audience_id, after, limit + 1)
        more = len(members) > limit
        members = members[:limit]
        return {
            "audience_id": audience_id,
            "members": members,
            "next": members[-1] if more else None,
        }

    async def delete(self, audience_id: str) -> dict[str, Any]:
        return {"deleted": await self.store.delete(audience_id)}
