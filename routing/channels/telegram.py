"""Telegram through the bot feature's shared, rate-limited sender (bots/, issue 8):
`node.features["bot"].sender.send(chat_id, text, priority=...)`, and the account link
`bots.links.chat_id_for(storage, user_id) -> int | None`.

Skipped ("not_configured", "telegram not configured") when the bot feature is absent or has no
token; skipped ("not_linked") when the user has not linked a chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routing.channels.base import (
    Message,
    OutboundChannel,
    PermanentError,
    Sent,
    Skip,
    TransientError,
)
from routing.preferences import Preferences
from routing.priorities import Channel, Priority

if TYPE_CHECKING:
    from server.node import Node


class TelegramChannel(OutboundChannel):
    name = Channel.TELEGRAM
    concurrency = 16

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def _sender(self) -> Any:
        bot = self.node.features.get("bot")
        if bot is None or not self.node.settings.telegram_bot_token:
            return None
        sender = getattr(bot, "sender", None)
        return sender if sender is not None and getattr(sender, "enabled", True) else None

    def unavailable(self) -> str | None:
        return None if self._sender() is not None else "telegram not configured"

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        sender = self._sender()
        if sender is None:
            raise Skip("not_configured", "telegram not configured")
        from bots.links import chat_id_for
        from bots.sender import Priority as SendPriority
        from bots.sender import TelegramDisabled

        chat_id = await chat_id_for(self.node.storage, msg.user_id)
        if chat_id is None:
            raise Skip("not_linked", "no Telegram chat linked (or the chat blocked the bot)")
        # the bot's admin alerts go first; then immediate notifications; the rest like briefs
        prio = SendPriority.NORMAL if msg.priority is Priority.IMMEDIATE else SendPriority.BRIEF
        try:
            result = await sender.send(chat_id, f"{msg.title}\n{msg.body}", priority=prio)
        except TelegramDisabled:
            raise Skip("not_configured", "telegram not configured") from None
        if result.status == "sent":
            return Sent(str(result.message_id), f"after {result.attempts} attempt(s)")
        if result.status == "blocked":
            raise PermanentError("blocked", "the chat blocked the bot")
        # the sender already retried 429s and network errors; try again later, then give up
        raise TransientError(f"telegram: {result.error or 'failed'}")
