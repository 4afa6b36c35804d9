"""PrivacyFeature ("privacy"): a user's data — export and erasure.

Services: `exporter` (GET /v1/me/export), `eraser` (DELETE /v1/me and the admin route; the
`privacy.sweep` job repeats an erasure a little later for late writes). Both iterate over the
node's features (each exports and erases its own rows) and the core; this feature audits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from privacy.erase import SWEEP_JOB, Eraser
from privacy.export import Exporter
from server.feature import Feature

if TYPE_CHECKING:
    from server.node import Node


class PrivacyFeature(Feature):
    name = "privacy"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.exporter = Exporter(node)
        self.eraser = Eraser(node)
        node.scheduler.register(SWEEP_JOB, self.eraser.sweep)

    def routes(self, app: web.Application) -> None:
        from privacy.http import add_routes

        add_routes(app, self)
