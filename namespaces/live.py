"""/live: live stream rooms (chat, reactions, viewer sync). `live.*` events are fanned out here."""

from __future__ import annotations

from namespaces.base import RoomsNamespace
from namespaces.live_audio import AudioHandlers
from namespaces.live_chat import ChatHandlers


class LiveNamespace(ChatHandlers, AudioHandlers, RoomsNamespace):
    pass
