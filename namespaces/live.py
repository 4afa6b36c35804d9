"""/live: live stream rooms — chat and reactions (livechat), audio rooms (media), viewer
counts. `live.*` events are fanned out here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from livechat.service import LiveChat
from livechat.sockets import ChatHandlers
from media.sockets import AudioHandlers
from media.stage import AudioRooms
from server.node import Node
from server.sockets import RoomsNamespace


class LiveNamespace(ChatHandlers, AudioHandlers, RoomsNamespace):
    def __init__(
        self,
        node: Node,
        chat: LiveChat,
        audio: AudioRooms,
        viewed: Callable[[str], Awaitable[None]],
    ) -> None:
        super().__init__("/live", node, viewed)
        self.chat = chat
        self.audio = audio
