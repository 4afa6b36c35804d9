"""Wires live chat into the node: the gate and reaction backends (Redis when OURS_REDIS_URL is
set, in-process otherwise), the `lives` bus consumer and the trim job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from server import redis_client
from server.feature import Feature
from server.livechat.gate import Gate, MemoryGate
from server.livechat.gate_redis import RedisGate
from server.livechat.reactions import MemoryReactions, Reactions
from server.livechat.reactions_redis import RedisReactions
from server.livechat.service import LiveChat

if TYPE_CHECKING:
    from server.node import Node

TRIM_JOB = "livechat.trim"
TRIM_EVERY_S = 600


class LiveChatFeature(Feature):
    name = "livechat"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self._redis: Any = None
        gate: Gate
        reactions: Reactions
        if s.redis_url:
            self._redis = redis_client.connect(s.redis_url)
            gate = RedisGate(self._redis, s.redis_prefix)
            reactions = RedisReactions(self._redis, s.redis_prefix, self._burst)
        else:
            gate = MemoryGate()
            reactions = MemoryReactions(self._burst)
        self.service = LiveChat(node, gate, reactions)
        node.bus.subscribe("livechat.lives", self.service.on_event)

    async def _burst(self, live_id: str, counts: dict[str, int]) -> None:
        await self.service.burst(live_id, counts)

    async def start(self) -> None:
        self.node.scheduler.register(TRIM_JOB, self._trim)
        await self._schedule_trim()

    async def stop(self) -> None:
        await self.service.reactions.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def _trim(self, payload: dict[str, Any]) -> None:
        await self._schedule_trim()  # the next one first: a failing trim does not stop them
        await self.service.trim()

    async def _schedule_trim(self) -> None:
        """Every TRIM_EVERY_S; the key names the slot, so every process schedules the same."""
        slot = int(datetime.now(UTC).timestamp() // TRIM_EVERY_S) + 1
        run_at = datetime.fromtimestamp(slot * TRIM_EVERY_S, UTC)
        await self.node.scheduler.schedule(TRIM_JOB, f"{TRIM_JOB}:{slot}", run_at)
