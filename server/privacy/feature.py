"""PrivacyFeature ("privacy"): a user's data — export and erasure.

Services: `exporter` (GET /v1/me/export), `eraser` (DELETE /v1/me and the admin route; the
`privacy.sweep` job repeats an erasure a little later for late writes). With Redis configured
it holds its own client for the erasure's key sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiohttp import web

from server.feature import Feature
from server.privacy.erase import SWEEP_JOB, Eraser
from server.privacy.export import Exporter

if TYPE_CHECKING:
    from server.node import Node


class PrivacyFeature(Feature):
    name = "privacy"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.redis: Any = (
            aioredis.from_url(s.redis_url, decode_responses=True) if s.redis_url else None
        )
        self.exporter = Exporter(node)
        self.eraser = Eraser(node, self.redis)
        node.scheduler.register(SWEEP_JOB, self.eraser.sweep)

    def routes(self, app: web.Application) -> None:
        from server.privacy.http import add_routes

        add_routes(app)

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
