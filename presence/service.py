"""The presence service: turns /presence connections, heartbeats and expiries into `presence:update`
for whoever watches (room `presence:{user}` on /presence)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from presence.backend import PresenceStatus, PresenceStore, Status
from server.server_events import server_event

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.presence")

NS = "/presence"
MAX_WATCH = 500

PRESENCE_UPDATE = server_event(
    "presence:update",
    PresenceStatus,
    namespaces=(NS,),
    summary="A watched user went online or offline (to sockets subscribed to that user)",
    example={"user_id": "u_bob", "status": "online", "last_seen": 1736100131.4},
)


class Presence:
    def __init__(self, node: Node, store: PresenceStore) -> None:
        self.node = node
        s = node.settings
        self.ttl, self.refresh, self.grace = (
            s.presence_ttl_s,
            s.presence_refresh_s,
            s.presence_grace_s,
        )
        self.store = store
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        periodic = self.node.periodic
        periodic.every(self.refresh, "presence.refresh", self.refresh_devices)
        periodic.every(min(2.0, self.ttl / 4), "presence.expire", self.expire)

    async def stop(self) -> None:
        for t in self._pending:
            t.cancel()
        for t in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def announce(self, status: Status) -> None:
        await self.node.fanout.emit(
            PRESENCE_UPDATE,
            status.wire(),
            namespace=NS,
            room=f"presence:{status.user_id}",
            volatile=True,
        )

    async def _announce_if_visible(self, user_id: str) -> None:
        if not await self.store.invisible(user_id):
            (status,) = await self.store.statuses([user_id])
            await self.announce(status)

    async def connected(self, user_id: str, sid: str) -> None:
        if await self.store.touch(user_id, sid, self.ttl):
            await self._announce_if_visible(user_id)

    async def heartbeat(self, user_id: str, sid: str) -> None:
        await self.connected(user_id, sid)

    async def disconnected(self, user_id: str, sid: str) -> None:
        await self.store.leave(user_id, sid)
        task = asyncio.create_task(self._settle_later(user_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle_later(self, user_id: str) -> None:
        await asyncio.sleep(self.grace)  # a quick reconnect does not flap
        if await self.store.settle(user_id):
            await self._announce_if_visible(user_id)

    async def statuses(self, user_ids: list[str]) -> list[dict[str, Any]]:
        return [s.wire() for s in await self.store.statuses(user_ids)]

    async def set_invisible(self, user_id: str, invisible: bool) -> None:
        (before,) = await self.store.statuses([user_id])
        await self.store.set_invisible(user_id, invisible)
        (after,) = await self.store.statuses([user_id])
        if before.online != after.online:
            await self.announce(after)

    async def refresh_devices(self) -> None:
        """Keep this node's connected devices alive; a crashed node's expire after ttl."""
        ns = self.node.namespaces.get(NS)
        if ns is None:
            return
        for sid, principal in list(ns.principals.items()):
            await self.store.touch(principal.user_id, sid, self.ttl)

    async def expire(self) -> None:
        for user_id in await self.store.expire():
            await self._announce_if_visible(user_id)
