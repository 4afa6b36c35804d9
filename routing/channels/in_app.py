"""In-app: the inbox rows live in storage (routing.store.inbox); this tells every open socket
of the user on /notifications (room `user:{id}`, on every node through the fan-out seam)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from routing.store.inbox import InboxItem
from server.contract import Outgoing
from server.fanout import Fanout
from server.rooms import user_room
from server.server_events import server_event

NAMESPACE = "/notifications"


class InboxItemLive(InboxItem):
    """`notification:new` / `notification:updated`: the inbox item and the unread count."""

    unread: int = Field(description="the user's unread notifications, this one included")


class NotificationsRead(Outgoing):
    """`notification:read`: what was marked read, on any of the user's devices."""

    ids: list[int] | None = Field(description="the ids newly read; null when all were read")
    all: bool = Field(description="true: every notification was marked read")
    unread: int = Field(description="the user's unread notifications left")


_ITEM_EXAMPLE: dict[str, Any] = {
    "id": 4711,
    "kind": "like",
    "priority": "standard",
    "title": "New like",
    "body": "u_bob and 2 others liked your post",
    "data": {
        "event_id": "8f1c2e4a-0b7d-4f7e-9a51-3c2d1e0f9a88",
        "content_id": "c_123",
        "creator_id": "u_alice",
        "user_id": "u_bob",
    },
    "actors": ["u_bob", "u_carol", "u_dave"],
    "actor_count": 3,
    "event_count": 3,
    "created_at": "2025-01-05T18:02:11.402000+00:00",
    "updated_at": "2025-01-05T18:09:40.118000+00:00",
    "read": False,
    "unread": 5,
}

NOTIFICATION_NEW = server_event(
    "notification:new",
    InboxItemLive,
    namespaces=(NAMESPACE,),
    summary="A new notification in the user's inbox (to every device of the user)",
    example={
        **_ITEM_EXAMPLE,
        "body": "u_bob liked your post",
        "actors": ["u_bob"],
        "actor_count": 1,
        "event_count": 1,
        "updated_at": _ITEM_EXAMPLE["created_at"],
    },
)
NOTIFICATION_UPDATED = server_event(
    "notification:updated",
    InboxItemLive,
    namespaces=(NAMESPACE,),
    summary="An unread notification grew (one more like, follow, ...): replace it by `id`",
    example=_ITEM_EXAMPLE,
)
NOTIFICATION_READ = server_event(
    "notification:read",
    NotificationsRead,
    namespaces=(NAMESPACE,),
    summary="Notifications were marked read on one of the user's devices: mark them read here",
    example={"ids": [4711, 4702], "all": False, "unread": 3},
)


#: one socket event to one user's room: (user id, event name, data)
Emit = tuple[str, str, dict[str, Any]]


class InAppChannel:
    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def new_event(self, user_id: str, item: dict[str, Any], unread: int) -> Emit:
        return user_id, NOTIFICATION_NEW, {**item, "unread": unread}

    def updated_event(self, user_id: str, item: dict[str, Any], unread: int) -> Emit:
        return user_id, NOTIFICATION_UPDATED, {**item, "unread": unread}

    async def tell_many(self, emits: list[Emit]) -> None:
        """Many users' rooms in one fan-out call (one Redis round trip and publish)."""
        await self.fanout.emit_many(
            [(event, data, NAMESPACE, [user_room(user)]) for user, event, data in emits]
        )

    async def new(self, user_id: str, item: dict[str, Any], unread: int) -> None:
        await self._tell(user_id, NOTIFICATION_NEW, {**item, "unread": unread})

    async def updated(self, user_id: str, item: dict[str, Any], unread: int) -> None:
        await self._tell(user_id, NOTIFICATION_UPDATED, {**item, "unread": unread})

    async def read(self, user_id: str, ids: list[int] | None, unread: int) -> None:
        """Every device learns what was read (on any device) and the unread count."""
        await self._tell(
            user_id, NOTIFICATION_READ, {"ids": ids, "all": ids is None, "unread": unread}
        )

    async def _tell(self, user_id: str, event: str, data: dict[str, Any]) -> None:
        await self.fanout.emit(event, data, namespace=NAMESPACE, room=user_room(user_id))
