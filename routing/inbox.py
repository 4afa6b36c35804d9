"""What a signed-in user does with their notifications: list, read, count; preferences; push
devices; and why a notification did or did not arrive (the delivery log).

The models here (and `Preferences` in routing/preferences.py) are what the socket acks and
the HTTP routes send: `InboxItem`, `InboxPage`, `InboxRead`, `InboxUnread`, `Delivery`,
`Deliveries`, `DeviceRegistered`, `DeviceUnregistered`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from routing.channels.in_app import InAppChannel
from routing.preferences import ContactUpdate, Preferences, PreferencesUpdate, apply_update
from routing.store import RouterStore
from routing.store.inbox import InboxItem
from routing.store.outbox import Delivery
from server.auth import Principal, Role
from server.contract import Outgoing
from server.errors import ApiError, Code

__all__ = [
    "Deliveries",
    "Delivery",
    "DeviceRegistered",
    "DeviceUnregistered",
    "Inbox",
    "InboxItem",
    "InboxPage",
    "InboxRead",
    "InboxUnread",
]


class InboxPage(Outgoing):
    """A page of the user's inbox, newest first (`Inbox.page`)."""

    items: list[InboxItem]
    next: int | None = Field(
        description="`before` for the next (older) page; null on the last page"
    )
    unread: int = Field(description="the user's unread notifications, in all")


class InboxRead(Outgoing):
    """What marking notifications read did (`Inbox.read`)."""

    read: list[int] = Field(description="the ids newly marked read (already read ones left out)")
    cancelled: int = Field(
        description="push/email/SMS/Telegram deliveries of them that were still waiting and"
        " will not go out now"
    )
    unread: int = Field(description="the user's unread notifications left")


class InboxUnread(Outgoing):
    unread: int = Field(description="the user's unread notifications")
    mentions: int = Field(description="of them, mentions (`mention`: @you in a circle)")


class Deliveries(Outgoing):
    """The delivery log of one notification: why it did or did not arrive where."""

    notification_id: int
    user_id: str = Field(description="the notification's recipient")
    deliveries: list[Delivery] = Field(
        description="one per event and channel (ordered by event, then id)"
    )


class DeviceRegistered(Outgoing):
    registered: Literal[True]
    devices: int = Field(
        description="the user's push devices now (over the cap, the least recently seen went)"
    )


class DeviceUnregistered(Outgoing):
    unregistered: bool = Field(description="false: the token was not registered to this user")


@dataclass(eq=False)
class Inbox:
    store: RouterStore
    in_app: InAppChannel
    now: Callable[[], datetime]
    max_devices: int

    # -- notifications ----------------------------------------------------------------------

    async def page(
        self, user_id: str, before: int | None, limit: int, unread_only: bool
    ) -> dict[str, Any]:
        items = await self.store.inbox.page(user_id, before, limit + 1, unread_only)
        more = len(items) > limit
        items = items[:limit]
        unread = await self.unread(user_id)
        return {
            "items": items,
            "next": items[-1]["id"] if more else None,
            "unread": unread,
        }

    async def read(self, user_id: str, ids: list[int] | None) -> dict[str, Any]:
        """Mark read (these, or all); pending push/email/SMS/Telegram for them are cancelled;
        every device of the user hears `notification:read`."""
        read, cancelled, unread = await self.store.inbox.mark_read(user_id, ids, self.now())
        if read:
            await self.in_app.read(user_id, None if ids is None else read, unread)
        return {"read": read, "cancelled": cancelled, "unread": unread}

    async def unread(self, user_id: str) -> int:
        return (await self.store.inbox.unread_counts([user_id]))[user_id]

    async def badges(self, user_id: str) -> dict[str, int]:
        """The unread count, and the unread mentions among them (their own badge)."""
        return {
            "unread": await self.unread(user_id),
            "mentions": await self.store.inbox.unread_of_kind(user_id, "mention"),
        }

    async def deliveries(self, principal: Principal, notification_id: int) -> dict[str, Any]:
        owner = await self.store.inbox.owner_of(notification_id)
        if owner is None or (owner != principal.user_id and principal.role is not Role.ADMIN):
            raise ApiError(Code.NOT_FOUND, "no such notification")
        return {
            "notification_id": notification_id,
            "user_id": owner,
            "deliveries": await self.store.outbox.of_notification(notification_id),
        }

    # -- preferences ------------------------------------------------------------------------

    async def preferences(self, user_id: str) -> dict[str, Any]:
        return (await self.store.prefs.get(user_id)).public()

    async def set_preferences(
        self, user_id: str, update: PreferencesUpdate | ContactUpdate
    ) -> dict[str, Any]:
        prefs: Preferences = apply_update(await self.store.prefs.get(user_id), update)
        await self.store.prefs.save(user_id, prefs)
        return prefs.public()

    # -- push devices -----------------------------------------------------------------------

    async def register_device(self, user_id: str, token: str, platform: str) -> dict[str, Any]:
        count = await self.store.devices.register(user_id, token, platform, self.max_devices)
        return {"registered": True, "devices": count}

    async def unregister_device(self, user_id: str, token: str) -> dict[str, Any]:
        return {"unregistered": await self.store.devices.unregister(user_id, token)}
