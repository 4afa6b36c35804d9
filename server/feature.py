"""A feature is one capability wired into the node: its services, bus consumers, scheduled
jobs and HTTP routes. The node builds every feature listed in `server.features`, then starts
them after storage and the bus, and stops them before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.node import Node


class Feature:
    name: str = "feature"

    def __init__(self, node: Node) -> None:
        self.node = node

    def routes(self, app: web.Application) -> None:
        """Add this feature's HTTP routes."""

    async def start(self) -> None:
        """Called once storage is open and the bus started."""

    async def stop(self) -> None:
        """Called before the bus and storage close."""
