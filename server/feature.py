"""A feature is one capability wired into the node: its services, bus consumers, scheduled
jobs, HTTP routes, and its share of a user's data. The composition root (`app.py`) builds each
feature with what it needs and hands the list to the node, which starts them after storage and
the bus and stops them, in reverse, before.

A user's data is a per-feature protocol: each feature exports and erases its own rows
(`export_user`, `erase_user`); the privacy feature only iterates over the features, runs the
erasure in one transaction (`server/personal_data.py`) and audits it. A feature that keeps
nothing about users keeps the defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.personal_data import Erasure

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

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """This feature's sections of the user's export (`GET /v1/me/export`): top-level keys
        of the document; a section that several features fill (e.g. `profile`) is a dict
        that the exporter merges."""
        return {}

    async def erase_user(self, erasure: Erasure) -> None:
        """Remove or anonymize this feature's rows of `erasure.user_id` (see `Erasure`)."""
