"""The five Socket.IO namespaces, one module each; handlers stay thin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from namespaces.base import Namespace
from namespaces.feed import FeedNamespace
from namespaces.live import LiveNamespace
from namespaces.messages import MessagesNamespace
from namespaces.notifications import NotificationsNamespace
from namespaces.presence import PresenceNamespace

if TYPE_CHECKING:
    from server.node import Node

ALL: dict[str, type[Namespace]] = {
    "/feed": FeedNamespace,
    "/live": LiveNamespace,
    "/notifications": NotificationsNamespace,
    "/messages": MessagesNamespace,
    "/presence": PresenceNamespace,
}


def build(node: Node) -> dict[str, Namespace]:
    return {path: cls(path, node) for path, cls in ALL.items()}
