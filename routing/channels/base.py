"""The interface every outward channel (push, email, SMS, Telegram) implements.

A channel sends one `Message` to one user and either returns `Sent` or raises:
  Skip            nothing to send to (no device, no verified number, not linked): not retried
  PermanentError  the provider refused for good (invalid token, bad number): not retried
  TransientError  try again later (429, 5xx, network); `retry_after` when the provider said
The dispatcher turns these into delivery-log states and retries.

A channel reaches its provider without blocking the event loop: an async client (push), or its
SDK's sync client in the channel's own bounded thread pool (`in_thread`: email, SMS), paced at
the provider's documented rate with a `Pacer` where it has one.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from routing.preferences import Preferences
from routing.priorities import Channel, Priority

T = TypeVar("T")


@dataclass(slots=True)
class Message:
    """One send to one user: a single notification, or a summary of several (`items`)."""

    user_id: str
    priority: Priority
    title: str
    body: str
    items: list[dict[str, Any]]
    key: str  # stable across retries: collapse key / idempotency key
    data: dict[str, str] = field(default_factory=dict)
    heading: str = "New on OURS"
    address: Any = None  # what `OutboundChannel.addresses` found for this user (push: devices)


@dataclass(slots=True)
class Sent:
    provider_id: str | None = None
    detail: str | None = None


class Skip(Exception):
    """Not an error: there is nothing to send to."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason


class PermanentError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class TransientError(Exception):
    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = "provider_error"
        self.detail = detail
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; HTTP dates are read as unknown)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Pacer:
    """At most `rate` starts per second, evenly spaced, and up to `burst` at once after a
    pause (a virtual-time token bucket, GCRA). `await pace.wait()` returns when the caller's
    turn has come; callers reserve their turn in the order they call, without a lock (one
    event loop) and without a task each."""

    def __init__(
        self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.interval = 1.0 / rate
        self.burst = max(1, burst)
        self.clock = clock
        self._next = 0.0  # when the next start may go (monotonic seconds)

    def reserve(self) -> float:
        """Take the next turn; return how long to wait for it."""
        now = self.clock()
        turn = max(self._next, now - (self.burst - 1) * self.interval)
        self._next = turn + self.interval
        return max(0.0, turn - now)

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class OutboundChannel(abc.ABC):
    """A channel with a provider behind it."""

    name: Channel
    #: at most this many sends at once on this channel (and threads, for blocking SDKs)
    concurrency: int = 8
    #: sends started per second at most (the provider's documented limit), or None: the
    #: dispatcher leases no more than this rate can send well within a lease
    rate: float | None = None

    def __init__(self) -> None:
        # the channel's own threads, made on first use: a slow provider cannot starve the
        # loop's default executor (DNS lookups, other features) nor another channel
        self._threads: ThreadPoolExecutor | None = None

    def unavailable(self) -> str | None:
        """Why this channel cannot send at all (not configured), or None when it can."""
        return None

    async def start(self) -> None:  # noqa: B027 - an optional hook
        """Create SDK clients (called once the node starts)."""

    async def close(self) -> None:
        """Release SDK clients (subclasses call this last)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def addresses(self, user_ids: list[str]) -> dict[str, Any]:
        """Where each user is reached on this channel, looked up for many users at once before
        their sends (push: the registered devices); users without an address are left out."""
        return {}

    @abc.abstractmethod
    async def send(self, msg: Message, prefs: Preferences) -> Sent: ...

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in one of the channel's `concurrency` worker threads."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self.concurrency, thread_name_prefix=f"ours-{self.name}"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))
