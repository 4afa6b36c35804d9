"""/messages: direct messages and circles, their attachments, blocks and mutes (messaging) and
the HOURS balance (ledger). On connect every socket joins the `conversation:{id}` rooms of its
user's conversations."""

from __future__ import annotations

from ledger.service import Ledger
from ledger.sockets import LedgerHandlers
from messaging.attachment_sockets import AttachmentHandlers
from messaging.expression_sockets import ExpressionHandlers
from messaging.safety_sockets import SafetyHandlers
from messaging.search_sockets import SearchHandlers
from messaging.service import Messaging
from messaging.sockets import MessageHandlers
from server.node import Node


class MessagesNamespace(
    MessageHandlers,
    SearchHandlers,
    LedgerHandlers,
    ExpressionHandlers,
    AttachmentHandlers,
    SafetyHandlers,
):
    def __init__(self, node: Node, messaging: Messaging, ledger: Ledger) -> None:
        super().__init__("/messages", node)
        self.messaging = messaging
        self.ledger = ledger
