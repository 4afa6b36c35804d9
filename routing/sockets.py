"""Socket handlers of /notifications: the user's notifications, live (`notification:new`,
`notification:updated`, `notification:read` to room `user:{id}`), their inbox, preferences and
push devices.
`hours.*`, `user.*` and `storefront.*` events are also fanned out here as they are.

Handlers are thin: validate, call the router's inbox service (routing/inbox.py), return data.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from routing.inbox import Inbox
from routing.preferences import PreferencesUpdate
from server.auth import Principal
from server.sockets import Namespace, handles

NotificationId = Annotated[int, Field(ge=1, le=2**62)]
PushToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListReq(Req):
    before: NotificationId | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    unread_only: bool = False


class ReadReq(Req):
    """`{id}` marks one read, `{ids: [...]}` several, `{all: true}` everything."""

    id: NotificationId | None = None
    ids: Annotated[list[NotificationId], Field(min_length=1, max_length=500)] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> ReadReq:
        given = (self.id is not None) + (self.ids is not None) + bool(self.all)
        if given != 1:
            raise ValueError("send exactly one of id, ids or all: true")
        return self

    def targets(self) -> list[int] | None:
        if self.all:
            return None
        return [self.id] if self.id is not None else list(self.ids or [])


class DeviceReq(Req):
    token: PushToken
    platform: Literal["ios", "android", "web"]


class DeviceRemoveReq(Req):
    token: PushToken


class NotificationHandlers(Namespace):
    """The /notifications events; `inbox` is handed in by the namespace."""

    inbox: Inbox

    @handles("notification:list", ListReq)
    async def notification_list(self, sid: str, p: Principal, req: ListReq) -> dict[str, Any]:
        return await self.inbox.page(p.user_id, req.before, req.limit, req.unread_only)

    @handles("notification:read", ReadReq)
    async def notification_read(self, sid: str, p: Principal, req: ReadReq) -> dict[str, Any]:
        return await self.inbox.read(p.user_id, req.targets())

    @handles("notification:unread")
    async def notification_unread(self, sid: str, p: Principal, _: Any) -> dict[str, Any]:
        return {"unread": await self.inbox.unread(p.user_id)}

    @handles("preferences:get")
    async def preferences_get(self, sid: str, p: Principal, _: Any) -> dict[str, Any]:
        return await self.inbox.preferences(p.user_id)

    @handles("preferences:set", PreferencesUpdate)
    async def preferences_set(
        self, sid: str, p: Principal, req: PreferencesUpdate
    ) -> dict[str, Any]:
        return await self.inbox.set_preferences(p.user_id, req)

    @handles("device:register", DeviceReq)
    async def device_register(self, sid: str, p: Principal, req: DeviceReq) -> dict[str, Any]:
        return await self.inbox.register_device(p.user_id, req.token, req.platform)

    @handles("device:unregister", DeviceRemoveReq)
    async def device_unregister(
        self, sid: str, p: Principal, req: DeviceRemoveReq
    ) -> dict[str, Any]:
        return await self.inbox.unregister_device(p.user_id, req.token)
