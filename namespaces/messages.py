"""/messages: direct messages and circles, blocks and mutes (messaging) and the HOURS balance
(ledger). On connect every socket joins the `conversation:{id}` rooms of its user's
conversations."""

from __future__ import annotations

from ledger.service import Ledger
from ledger.sockets import LedgerHandlers
from messaging.safety_sockets import SafetyHandlers
from messaging.service import Messaging
from messaging.sockets import MessageHandlers
from server.node import Node


class MessagesNamespace(MessageHandlers, LedgerHandlers, SafetyHandlers):
    def __init__(self, node: Node, messaging: Messaging, ledger: Ledger) -> None:
        super().__init__("/messages", node)
        self.messaging = messaging
        self.ledger = ledger
