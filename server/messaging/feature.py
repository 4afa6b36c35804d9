"""Wires messaging into the node: the service and its scheduled-note job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.feature import Feature
from server.messaging.service import Messaging

if TYPE_CHECKING:
    from server.node import Node


class MessagingFeature(Feature):
    name = "messaging"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.service = Messaging(node)
        node.scheduler.register("message.scheduled", self.service.deliver_scheduled)
