"""Socket handlers of /presence: online status. Each /presence socket is a device of its user;
watchers subscribe to users and get `presence:update {user_id, status, last_seen}` on every
change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from presence.backend import PresenceStatus
from presence.service import MAX_WATCH, Presence, hidden_room, watch_room
from server.auth import Principal
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.sockets import Namespace, handles

UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class UsersReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_WATCH)]


class InvisibleReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invisible: bool


class PresenceHeartbeat(Outgoing):
    next_in_s: int = Field(description="send the next heartbeat within this many seconds")


class PresenceStatuses(Outgoing):
    users: list[PresenceStatus] = Field(
        description="one per requested user (repeats dropped), in request order"
    )


class PresenceUnsubscribed(Outgoing):
    user_ids: list[str] = Field(description="the user ids sent, as sent")


class PresenceVisibility(Outgoing):
    invisible: bool = Field(description="true: others see this user offline")


class PresenceHandlers(Namespace):
    """The /presence events; `svc` is handed in by the namespace (namespaces/presence.py)."""

    svc: Presence

    async def connected(self, sid: str, principal: Principal, auth: dict[str, Any]) -> None:
        await self.svc.connected(principal.user_id, sid)

    async def disconnected(self, sid: str, principal: Principal) -> None:
        await self.svc.disconnected(principal.user_id, sid)

    @handles("presence:heartbeat", ack=PresenceHeartbeat)
    async def heartbeat(self, sid: str, p: Principal, _: Any) -> Any:
        """Keep this device online, even past a crash of its node (send every 30 s)."""
        await self.svc.heartbeat(p.user_id, sid)
        return {"next_in_s": 30}

    @handles(
        "presence:subscribe",
        UsersReq,
        ack=PresenceStatuses,
        errors=(Code.FORBIDDEN,),
        example={"user_ids": ["u_bob", "u_carol"]},
    )
    async def subscribe(self, sid: str, p: Principal, req: UsersReq) -> Any:
        """Watch users: their current status now, then `presence:update` on every change."""
        rooms = self.rooms_of(sid)
        watched = {r.partition(":")[2] for r in rooms if r.startswith(("presence:", "presence-"))}
        new = [u for u in dict.fromkeys(req.user_ids) if u not in watched]
        if len(watched) + len(new) > MAX_WATCH:
            raise_too_many()
        hidden = await self.svc.hidden(p.user_id, new) if new else set()
        for u in new:  # a watch of a user hidden from you waits until no block is between you
            await self.enter_room(sid, hidden_room(u) if u in hidden else watch_room(u))
        return {"users": await self.svc.statuses(list(dict.fromkeys(req.user_ids)), p.user_id)}

    @handles(
        "presence:unsubscribe",
        UsersReq,
        ack=PresenceUnsubscribed,
        example={"user_ids": ["u_bob"]},
    )
    async def unsubscribe(self, sid: str, p: Principal, req: UsersReq) -> Any:
        """Stop watching users."""
        for u in req.user_ids:
            await self.leave_room(sid, watch_room(u))
            await self.leave_room(sid, hidden_room(u))
        return {"user_ids": req.user_ids}

    @handles(
        "presence:query",
        UsersReq,
        ack=PresenceStatuses,
        example={"user_ids": ["u_bob", "u_carol"]},
    )
    async def query(self, sid: str, p: Principal, req: UsersReq) -> Any:
        """The current status of users, once (without watching them)."""
        return {"users": await self.svc.statuses(list(dict.fromkeys(req.user_ids)), p.user_id)}

    @handles("presence:set", InvisibleReq, ack=PresenceVisibility, example={"invisible": True})
    async def set(self, sid: str, p: Principal, req: InvisibleReq) -> Any:
        """Go invisible (others see you offline) or visible again."""
        await self.svc.set_invisible(p.user_id, req.invisible)
        return {"invisible": req.invisible}


def raise_too_many() -> None:
    raise ApiError(Code.FORBIDDEN, f"watch at most {MAX_WATCH} users per socket")
