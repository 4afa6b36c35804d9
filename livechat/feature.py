"""Wires live chat into the node: the gate and reaction backends (chosen by the composition
root: Redis when OURS_REDIS_URL is set, in-process otherwise), the `lives` bus consumer and the
trim job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from livechat.gate import Gate
from livechat.reactions import Flush, Reactions
from livechat.service import LiveChat
from livechat.store import LiveChatStore
from server.clock import utcnow
from server.feature import Feature
from server.personal_data import Erasure

if TYPE_CHECKING:
    from server.node import Node

TRIM_JOB = "livechat.trim"
TRIM_EVERY_S = 600


class LiveChatFeature(Feature):
    name = "livechat"

    def __init__(self, node: Node, gate: Gate, reactions: Callable[[Flush], Reactions]) -> None:
        """`reactions` builds the reaction counter around this feature's burst callback."""
        super().__init__(node)
        self.store = LiveChatStore(node.storage)
        self.service = LiveChat(node, self.store, gate, reactions(self._burst))
        node.bus.subscribe("livechat.lives", self.service.on_event)
        node.scheduler.register(TRIM_JOB, self._trim)

    async def _burst(self, live_id: str, counts: dict[str, int]) -> None:
        await self.service.burst(live_id, counts)

    async def start(self) -> None:
        await self._schedule_trim()

    async def stop(self) -> None:
        await self.service.reactions.close()

    # -- a user's data ------------------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        return {"live_chat": await self.store.export_user(user_id)}

    async def erase_user(self, erasure: Erasure) -> None:
        """Their rows (livechat/store.py); after the commit their slow-mode marks go and the
        cached chat state of the lives that named them is reloaded."""
        lives = await self.store.erase_user(erasure)
        gate, user_id = self.service.gate, erasure.user_id

        async def after() -> int:
            for live_id in lives:
                await gate.invalidate(live_id)
            return await gate.forget_user(user_id)

        erasure.after(after)

    async def _trim(self, payload: dict[str, Any]) -> None:
        await self._schedule_trim()  # the next one first: a failing trim does not stop them
        await self.service.trim()

    async def _schedule_trim(self) -> None:
        """Every TRIM_EVERY_S; the key names the slot, so every process schedules the same."""
        slot = int(utcnow().timestamp() // TRIM_EVERY_S) + 1
        run_at = datetime.fromtimestamp(slot * TRIM_EVERY_S, UTC)
        await self.node.scheduler.schedule(TRIM_JOB, f"{TRIM_JOB}:{slot}", run_at)
