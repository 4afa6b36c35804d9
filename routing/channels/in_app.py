"""In-app: the inbox rows live in storage (routing.store.inbox); this tells every open socket
of the user on /notifications (room `user:{id}`, on every node through the fan-out seam)."""

from __future__ import annotations

from typing import Any

from server.fanout import Fanout
from server.rooms import user_room

NAMESPACE = "/notifications"


class InAppChannel:
    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    async def new(self, user_id: str, item: dict[str, Any], unread: int) -> None:
        await self._tell(user_id, "notification:new", {**item, "unread": unread})

    async def updated(self, user_id: str, item: dict[str, Any], unread: int) -> None:
        await self._tell(user_id, "notification:updated", {**item, "unread": unread})

    async def read(self, user_id: str, ids: list[int] | None, unread: int) -> None:
        """Every device learns what was read (on any device) and the unread count."""
        await self._tell(
            user_id, "notification:read", {"ids": ids, "all": ids is None, "unread": unread}
        )

    async def _tell(self, user_id: str, event: str, data: dict[str, Any]) -> None:
        await self.fanout.emit(event, data, namespace=NAMESPACE, room=user_room(user_id))
