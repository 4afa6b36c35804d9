"""Wires the console into the node: its HTTP routes, and the Socket.IO Admin UI when
OURS_ADMIN_UI_PASSWORD is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from console import http
from console.admin_ui import AdminUI
from server.feature import Feature

if TYPE_CHECKING:
    from server.node import Node


class ConsoleFeature(Feature):
    name = "console"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        s = node.settings
        self.admin_ui: AdminUI | None = None
        if node.sio is not None and s.admin_ui_password:
            self.admin_ui = AdminUI(node.sio, s.admin_ui_password, s.admin_ui_mode)

    def routes(self, app: web.Application) -> None:
        http.add_routes(app)

    async def start(self) -> None:
        if self.admin_ui is not None:  # the node starts before the server accepts connections
            self.admin_ui.start()

    async def stop(self) -> None:
        if self.admin_ui is not None:
            await self.admin_ui.stop()
