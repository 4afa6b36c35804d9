"""/presence: online status, watched per user (presence)."""

from __future__ import annotations

from presence.service import Presence
from presence.sockets import PresenceHandlers
from server.node import Node


class PresenceNamespace(PresenceHandlers):
    def __init__(self, node: Node, presence: Presence) -> None:
        super().__init__("/presence", node)
        self.svc = presence
