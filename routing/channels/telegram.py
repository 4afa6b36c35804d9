"""Telegram through the bot's shared, rate-limited sender: the channel is handed an outbox
(the bot feature, as a `TelegramOutbox`) that finds the chat linked to a user and sends.

The pace is the sender's (bots/sender.py with its `SendLimiter`, shared by every process on
Redis): 30 messages per second per bot token overall and one per second per chat, Telegram's
documented limits; its aiogram client is async, so nothing here runs in a thread. The channel
keeps at most 30 sends in its queue at once (a second's worth).

Skipped ("not_configured", "telegram not configured") when the bot has no token; skipped
("not_linked") when the user has not linked a chat (or the chat blocked the bot).
"""

from __future__ import annotations

from typing import Protocol

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


class TelegramReceipt(Protocol):
    @property
    def status(self) -> str: ...  # sent | blocked | failed

    @property
    def attempts(self) -> int: ...

    @property
    def message_id(self) -> int | None: ...

    @property
    def error(self) -> str | None: ...


class TelegramOutbox(Protocol):
    """What this channel needs of the bot (bots/feature.py implements it)."""

    @property
    def enabled(self) -> bool: ...

    async def chat_for(self, user_id: str) -> int | None: ...

    async def notify(self, chat_id: int, text: str, *, urgent: bool) -> TelegramReceipt: ...


class TelegramChannel(OutboundChannel):
    name = Channel.TELEGRAM
    concurrency = 30

    def __init__(self, outbox: TelegramOutbox) -> None:
        super().__init__()
        self.outbox = outbox

    def unavailable(self) -> str | None:
        return None if self.outbox.enabled else "telegram not configured"

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        if not self.outbox.enabled:
            raise Skip("not_configured", "telegram not configured")
        chat_id = await self.outbox.chat_for(msg.user_id)
        if chat_id is None:
            raise Skip("not_linked", "no Telegram chat linked (or the chat blocked the bot)")
        # the bot's admin alerts go first; then immediate notifications; the rest like briefs
        urgent = msg.priority is Priority.IMMEDIATE
        result = await self.outbox.notify(chat_id, f"{msg.title}\n{msg.body}", urgent=urgent)
        if result.status == "sent":
            return Sent(str(result.message_id), f"after {result.attempts} attempt(s)")
        if result.status == "blocked":
            raise PermanentError("blocked", "the chat blocked the bot")
        # the sender already retried 429s and network errors; try again later, then give up
        raise TransientError(f"telegram: {result.error or 'failed'}")
