"""Wires presence into the node: the service (its backend, in-process or Redis, is chosen by
the composition root; who is hidden from whom is `visibility`, messaging's blocks) and its
periodic refresh and expiry on serving nodes."""

from __future__ import annotations

from typing import Any

from presence.backend import PresenceStore
from presence.service import Presence, Visibility
from server.feature import Feature
from server.node import Node
from server.personal_data import Erasure


class PresenceFeature(Feature):
    name = "presence"

    def __init__(
        self, node: Node, store: PresenceStore, visibility: Visibility | None = None
    ) -> None:
        super().__init__(node)
        self.service = Presence(node, store, visibility)

    async def start(self) -> None:
        if self.node.with_sockets:
            self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def export_user(self, user_id: str) -> dict[str, Any]:
        store = self.service.store
        (status,) = await store.statuses([user_id])
        presence = {"invisible": await store.invisible(user_id), "last_seen": status.last_seen}
        return {"profile": {"presence": presence}}

    async def erase_user(self, erasure: Erasure) -> None:
        """Nothing in PostgreSQL; after the commit, everything the presence store holds."""
        store, user_id = self.service.store, erasure.user_id

        async def after() -> int:
            return await store.forget(user_id)

        erasure.after(after)
