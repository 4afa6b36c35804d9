"""The presence service: turns /presence connections, heartbeats and expiries into `presence:update`
for whoever watches (room `presence:{user}` on /presence).

Two users with a block between them (messaging's, asked through `Visibility`, handed in by
app.py) see each other offline: a watch of a hidden user waits in `presence-hidden:{user}`,
which nothing is sent to, and `hide` / `show` move a pair's watching sockets between the two
rooms (every node) when a block begins or the last one ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

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


class Visibility(Protocol):
    """Who may not see whom (messaging's blocks)."""

    async def hidden(self, viewer: str, user_ids: list[str]) -> set[str]:
        """Which of `user_ids` `viewer` is not to see (a block between them, either way)."""
        ...


class EveryoneVisible:
    """`Visibility` where nothing hides anyone."""

    async def hidden(self, viewer: str, user_ids: list[str]) -> set[str]:
        return set()


def watch_room(user_id: str) -> str:
    return f"presence:{user_id}"


def hidden_room(user_id: str) -> str:
    """Where a watch of `user_id` by someone they are hidden from waits (never sent to)."""
    return f"presence-hidden:{user_id}"


class Presence:
    def __init__(
        self, node: Node, store: PresenceStore, visibility: Visibility | None = None
    ) -> None:
        self.node = node
        self.visibility: Visibility = visibility or EveryoneVisible()
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
        """Devices that left just before — a drain closes every socket — are settled first,
        the grace waited out (a device back on another node meanwhile is not announced), so
        their watchers hear they went offline: nobody else would tell them, as the devices
        left the expiry sweep's index when they disconnected."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=self.grace)
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
            room=watch_room(status.user_id),
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

    async def statuses(
        self, user_ids: list[str], viewer: str | None = None
    ) -> list[dict[str, Any]]:
        """As `viewer` may see them: a user hidden from them is offline, never seen."""
        hidden = await self.hidden(viewer, user_ids) if viewer else set()
        return [
            (Status(s.user_id, False, None) if s.user_id in hidden else s).wire()
            for s in await self.store.statuses(user_ids)
        ]

    async def hidden(self, viewer: str, user_ids: list[str]) -> set[str]:
        return await self.visibility.hidden(viewer, user_ids)

    async def hide(self, a: str, b: str) -> None:
        """A block between `a` and `b`: their watches of each other wait, hidden."""
        fanout = self.node.fanout
        await fanout.move_user(NS, a, watch_room(b), hidden_room(b))
        await fanout.move_user(NS, b, watch_room(a), hidden_room(a))

    async def show(self, a: str, b: str) -> None:
        """No block left between `a` and `b`: their waiting watches of each other resume."""
        fanout = self.node.fanout
        await fanout.move_user(NS, a, hidden_room(b), watch_room(b))
        await fanout.move_user(NS, b, hidden_room(a), watch_room(a))

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
