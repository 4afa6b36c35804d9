"""The five Socket.IO namespaces, one module each.

A namespace is assembled from the socket handlers of the features it carries (each feature's
`sockets.py`: validation models and one call into its service per event) and is handed those
services here; `server/sockets.py` is the shared dispatcher (auth, size cap, rate limit, ack).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from activity.service import Activity
from ledger.service import Ledger
from livechat.service import LiveChat
from media.stage import AudioRooms
from messaging.service import Messaging
from namespaces.feed import FeedNamespace
from namespaces.live import LiveNamespace
from namespaces.messages import MessagesNamespace
from namespaces.notifications import NotificationsNamespace
from namespaces.presence import PresenceNamespace
from presence.service import Presence
from routing.inbox import Inbox
from server.node import Node
from server.sockets import Namespace

#: every namespace by path (its class lists the events it handles: `cls.client_events()`)
ALL: dict[str, type[Namespace]] = {
    "/feed": FeedNamespace,
    "/live": LiveNamespace,
    "/notifications": NotificationsNamespace,
    "/messages": MessagesNamespace,
    "/presence": PresenceNamespace,
}


@dataclass(frozen=True, slots=True)
class Services:
    """What the namespaces call: one service per feature that has socket events."""

    activity: Activity
    chat: LiveChat
    audio: AudioRooms
    messaging: Messaging
    ledger: Ledger
    inbox: Inbox
    presence: Presence
    viewed: Callable[[str], Awaitable[None]]  # a client joined a content/live room


def build(node: Node, services: Services) -> list[Namespace]:
    return [
        FeedNamespace(node, services.activity, services.viewed),
        LiveNamespace(node, services.chat, services.audio, services.viewed),
        NotificationsNamespace(node, services.inbox),
        MessagesNamespace(node, services.messaging, services.ledger),
        PresenceNamespace(node, services.presence),
    ]
