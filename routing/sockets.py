"""Socket handlers of /notifications: the user's notifications, live (`notification:new`,
`notification:updated`, `notification:read` to room `user:{id}`), their inbox, preferences and
push devices.
`hours.*`, `user.*` and `storefront.*` events are also fanned out here as they are.

Handlers are thin: validate, call the router's inbox service (routing/inbox.py), return data.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from routing.inbox import (
    DeviceRegistered,
    DeviceUnregistered,
    Inbox,
    InboxPage,
    InboxRead,
    InboxUnread,
)
from routing.preferences import Preferences, PreferencesUpdate
from server.auth import Principal
from server.sockets import Namespace, handles

NotificationId = Annotated[int, Field(ge=1, le=2**62)]
PushToken = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NotificationListReq(Req):
    before: NotificationId | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    unread_only: bool = False


class NotificationReadReq(Req):
    """`{id}` marks one read, `{ids: [...]}` several, `{all: true}` everything."""

    id: NotificationId | None = None
    ids: Annotated[list[NotificationId], Field(min_length=1, max_length=500)] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> NotificationReadReq:
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

    @handles(
        "notification:list",
        NotificationListReq,
        ack=InboxPage,
        example={"limit": 20, "unread_only": True},
    )
    async def notification_list(
        self, sid: str, p: Principal, req: NotificationListReq
    ) -> dict[str, Any]:
        """A page of the user's notifications, newest first (`before`: the previous `next`)."""
        return await self.inbox.page(p.user_id, req.before, req.limit, req.unread_only)

    @handles("notification:read", NotificationReadReq, ack=InboxRead, example={"all": True})
    async def notification_read(
        self, sid: str, p: Principal, req: NotificationReadReq
    ) -> dict[str, Any]:
        """Mark notifications read (`id`, `ids` or `all: true`); waiting push/email for them
        are cancelled and every device of the user hears `notification:read`."""
        return await self.inbox.read(p.user_id, req.targets())

    @handles("notification:unread", ack=InboxUnread)
    async def notification_unread(self, sid: str, p: Principal, _: Any) -> dict[str, Any]:
        """The user's unread count (the badge), and how many of them are mentions."""
        return await self.inbox.badges(p.user_id)

    @handles("preferences:get", ack=Preferences)
    async def preferences_get(self, sid: str, p: Principal, _: Any) -> dict[str, Any]:
        """The user's notification preferences, every type and channel spelled out."""
        return await self.inbox.preferences(p.user_id)

    @handles(
        "preferences:set",
        PreferencesUpdate,
        ack=Preferences,
        example={
            "level": "matches",
            "channels": {"sms": False},
            "quiet_hours": {"enabled": True, "start": "22:00", "end": "07:30"},
            "timezone": "Europe/Berlin",
        },
    )
    async def preferences_set(
        self, sid: str, p: Principal, req: PreferencesUpdate
    ) -> dict[str, Any]:
        """Change some preferences (omitted fields keep their value); answers the whole set."""
        return await self.inbox.set_preferences(p.user_id, req)

    @handles(
        "device:register",
        DeviceReq,
        ack=DeviceRegistered,
        example={"token": "fGx3k9TqRZ2m:APA91bH4exampleRegistrationToken", "platform": "android"},
    )
    async def device_register(self, sid: str, p: Principal, req: DeviceReq) -> dict[str, Any]:
        """Register this device's push (FCM) token for the user."""
        return await self.inbox.register_device(p.user_id, req.token, req.platform)

    @handles(
        "device:unregister",
        DeviceRemoveReq,
        ack=DeviceUnregistered,
        example={"token": "fGx3k9TqRZ2m:APA91bH4exampleRegistrationToken"},
    )
    async def device_unregister(
        self, sid: str, p: Principal, req: DeviceRemoveReq
    ) -> dict[str, Any]:
        """Stop push to this device's token (on sign-out)."""
        return await self.inbox.unregister_device(p.user_id, req.token)
