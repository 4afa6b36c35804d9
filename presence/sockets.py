"""Socket handlers of /presence: online status. Each /presence socket is a device of its user;
watchers subscribe to users and get `presence:update {user_id, status, last_seen}` on every
change."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from presence.service import MAX_WATCH, Presence
from server.auth import Principal
from server.sockets import Namespace, handles

UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class UsersReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_WATCH)]


class InvisibleReq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invisible: bool


class PresenceHandlers(Namespace):
    """The /presence events; `svc` is handed in by the namespace (namespaces/presence.py)."""

    svc: Presence

    async def connected(self, sid: str, principal: Principal, auth: dict[str, Any]) -> None:
        await self.svc.connected(principal.user_id, sid)

    async def disconnected(self, sid: str, principal: Principal) -> None:
        await self.svc.disconnected(principal.user_id, sid)

    @handles("presence:heartbeat")
    async def heartbeat(self, sid: str, p: Principal, _: Any) -> Any:
        await self.svc.heartbeat(p.user_id, sid)
        return {"next_in_s": 30}

    @handles("presence:subscribe", UsersReq)
    async def subscribe(self, sid: str, p: Principal, req: UsersReq) -> Any:
        watched = [r for r in self.rooms_of(sid) if r.startswith("presence:")]
        new = [u for u in dict.fromkeys(req.user_ids) if f"presence:{u}" not in watched]
        if len(watched) + len(new) > MAX_WATCH:
            raise_too_many()
        for u in new:
            await self.enter_room(sid, f"presence:{u}")
        return {"users": await self.svc.statuses(list(dict.fromkeys(req.user_ids)))}

    @handles("presence:unsubscribe", UsersReq)
    async def unsubscribe(self, sid: str, p: Principal, req: UsersReq) -> Any:
        for u in req.user_ids:
            await self.leave_room(sid, f"presence:{u}")
        return {"user_ids": req.user_ids}

    @handles("presence:query", UsersReq)
    async def query(self, sid: str, p: Principal, req: UsersReq) -> Any:
        return {"users": await self.svc.statuses(list(dict.fromkeys(req.user_ids)))}

    @handles("presence:set", InvisibleReq)
    async def set(self, sid: str, p: Principal, req: InvisibleReq) -> Any:
        await self.svc.set_invisible(p.user_id, req.invisible)
        return {"invisible": req.invisible}


def raise_too_many() -> None:
    from server.errors import ApiError, Code

    raise ApiError(Code.FORBIDDEN, f"watch at most {MAX_WATCH} users per socket")
