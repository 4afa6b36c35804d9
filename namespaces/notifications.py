"""/notifications: the user's notifications, inbox, preferences and push devices (routing)."""

from __future__ import annotations

from routing.inbox import Inbox
from routing.sockets import NotificationHandlers
from server.node import Node


class NotificationsNamespace(NotificationHandlers):
    def __init__(self, node: Node, inbox: Inbox) -> None:
        super().__init__("/notifications", node)
        self.inbox = inbox
