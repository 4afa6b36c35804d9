"""Telegram send limits: at most N messages in any window overall (30 per second for one bot
token) and one message per interval per chat. The backends sit side by side: this in-process
one for the embedded default, `limiter_redis` when several processes share one bot token.

A send holds a slot from the moment it is granted until `window` seconds after its answer came
back, and its chat stays closed until `interval` (or a 429's retry_after) after that answer.
Counting from the answer, not from the request, keeps the limit true at Telegram's side
whatever the network jitter: the (N+1)-th request cannot leave before the first one's answer
is a whole window old.
"""

from __future__ import annotations

import abc
import time
import uuid
from dataclasses import dataclass
from typing import Literal

POLL = 0.05  # seconds to wait when the slot holder is still in flight


@dataclass(frozen=True, slots=True)
class Admission:
    granted: bool
    wait: float  # seconds before asking again (when not granted)
    scope: Literal["ok", "chat", "global"]
    token: str = ""


class SendLimiter(abc.ABC):
    def __init__(self, per_window: int = 30, window: float = 1.0, chat_interval: float = 1.0):
        self.per_window = per_window
        self.window = window
        self.chat_interval = chat_interval

    @abc.abstractmethod
    async def acquire(self, chat_id: int) -> Admission:
        """Take a slot for one send to `chat_id` now, or say how long to wait."""

    @abc.abstractmethod
    async def release(
        self, chat_id: int, token: str, *, used: bool = True, retry_after: float = 0.0
    ) -> None:
        """The granted send got its answer (`used`), or never went out (not `used`)."""

    @abc.abstractmethod
    async def forget_chat(self, chat_id: int) -> int:
        """Erasure: drop what is kept about one chat; return the Redis keys deleted."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the limiter holds."""

    def cooldown(self, retry_after: float) -> float:
        return max(self.chat_interval, retry_after)


class MemoryLimiter(SendLimiter):
    """Limits within one process (time.monotonic)."""

    def __init__(self, per_window: int = 30, window: float = 1.0, chat_interval: float = 1.0):
        super().__init__(per_window, window, chat_interval)
        self._inflight: set[str] = set()
        self._done: dict[str, float] = {}  # token -> when its slot frees
        self._chat_free: dict[int, float] = {}  # chat -> when it may receive again
        self._chat_busy: set[int] = set()

    async def acquire(self, chat_id: int) -> Admission:
        now = time.monotonic()
        for token in [t for t, until in self._done.items() if until <= now]:
            del self._done[token]
        if chat_id in self._chat_busy:
            return Admission(False, POLL, "chat")
        free = self._chat_free.get(chat_id, 0.0)
        if free > now:
            return Admission(False, free - now, "chat")
        if len(self._inflight) + len(self._done) >= self.per_window:
            wait = min(self._done.values()) - now if self._done else POLL
            return Admission(False, max(wait, 0.0), "global")
        token = uuid.uuid4().hex
        self._inflight.add(token)
        self._chat_busy.add(chat_id)
        self._chat_free.pop(chat_id, None)
        return Admission(True, 0.0, "ok", token)

    async def forget_chat(self, chat_id: int) -> int:
        self._chat_free.pop(chat_id, None)
        return 0

    async def close(self) -> None:
        self._inflight.clear()
        self._done.clear()

    async def release(
        self, chat_id: int, token: str, *, used: bool = True, retry_after: float = 0.0
    ) -> None:
        now = time.monotonic()
        self._inflight.discard(token)
        self._chat_busy.discard(chat_id)
        if used:
            self._done[token] = now + self.window
            self._chat_free[chat_id] = now + self.cooldown(retry_after)
        if len(self._chat_free) > 10_000:
            for chat in [c for c, until in self._chat_free.items() if until <= now]:
                del self._chat_free[chat]
