"""The one Telegram sender of a node, shared by the bot (replies, brief, alerts) and the
notification router's Telegram channel (through `BotFeature.notify`).

    result = await sender.send(chat_id, text, priority=Priority.ALERT)

Messages wait in a priority queue (alerts before replies before briefs, first come first
served within a priority) and leave within the limits of a `SendLimiter`: 30 per second overall,
one per second per chat. A 429 puts the message back and closes its chat for `retry_after`
seconds; a 403 (the user blocked the bot) marks the chat blocked in storage, fails what is
queued for it, and later sends to it return `blocked` without calling Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from bots.limiter import SendLimiter
from bots.store import BotStore

log = logging.getLogger("ours.bot.sender")

MAX_TEXT = 4096  # Telegram's limit for one message


class Priority(IntEnum):
    ALERT = 0
    NORMAL = 1
    BRIEF = 2


@dataclass(frozen=True, slots=True)
class SendResult:
    status: Literal["sent", "blocked", "failed"]
    attempts: int
    message_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "sent"


class TelegramDisabled(RuntimeError):
    """No bot token is configured: nothing can be sent to Telegram."""


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    chat_id: int = field(compare=False)
    text: str = field(compare=False)
    future: asyncio.Future[SendResult] = field(compare=False)
    attempts: int = field(default=0, compare=False)


class TelegramSender:
    def __init__(
        self,
        bot: Bot | None,
        limiter: SendLimiter,
        store: BotStore,
        *,
        max_attempts: int = 5,
        max_retry_after: float = 300.0,
    ) -> None:
        self.bot = bot
        self.limiter = limiter
        self.store = store
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self._seq = itertools.count()
        self._queued: dict[int, list[_Job]] = {}  # chat -> its jobs, a heap
        self._ready: list[tuple[int, int, int]] = []  # (priority, seq, chat) of chats' heads
        self._cooling: list[tuple[float, int]] = []  # (may send again at, chat)
        self._not_before: dict[int, float] = {}  # chat -> monotonic time it may send again
        self._busy: set[int] = set()  # chats with a send in flight from this process
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()  # deliveries under way

    @property
    def enabled(self) -> bool:
        return self.bot is not None

    async def send(
        self, chat_id: int, text: str, *, priority: Priority = Priority.NORMAL
    ) -> SendResult:
        """Queue one message and wait for its outcome (sent, blocked or failed)."""
        if self.bot is None:
            raise TelegramDisabled(
                "Telegram is not configured: set OURS_TELEGRAM_BOT_TOKEN to send messages"
            )
        if self._task is None:
            raise RuntimeError("the Telegram sender is not started")
        if not text:
            raise ValueError("text must not be empty")
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        job = _Job(int(priority), next(self._seq), int(chat_id), text, future)
        self._push(job)
        return await future  # a cancelled caller drops its message if not yet sent

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name="telegram-sender")

    async def close(self, grace: float = 2.0) -> None:
        """Stop taking work; let sends in flight finish briefly; fail what is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        for queue in self._queued.values():
            for job in queue:
                self._resolve(job, SendResult("failed", job.attempts, error="sender stopped"))
        self._queued.clear()
        self._ready.clear()
        self._cooling.clear()

    # -- queue ------------------------------------------------------------------------------

    def _push(self, job: _Job) -> None:
        queue = self._queued.setdefault(job.chat_id, [])
        heapq.heappush(queue, job)
        if queue[0] is job:
            self._schedule_chat(job.chat_id)
        self._wake.set()

    def _schedule_chat(self, chat_id: int, now: float | None = None) -> None:
        """Put the chat's head where the dispatcher looks: ready now, or cooling until then.
        A chat with a send in flight is scheduled again when that send is answered."""
        queue = self._queued.get(chat_id)
        if not queue or chat_id in self._busy:
            return
        now = time.monotonic() if now is None else now
        until = self._not_before.get(chat_id, 0.0)
        if until > now:
            heapq.heappush(self._cooling, (until, chat_id))
        else:
            heapq.heappush(self._ready, (queue[0].priority, queue[0].seq, chat_id))

    def _next(self, now: float) -> tuple[_Job | None, float | None]:
        """The best job whose chat may send now, or how long until one may (None: idle)."""
        while self._cooling and self._cooling[0][0] <= now:
            _, chat = heapq.heappop(self._cooling)
            self._schedule_chat(chat, now)
        while self._ready:
            prio, seq, chat = heapq.heappop(self._ready)
            queue = self._queued.get(chat)
            if not queue or (queue[0].priority, queue[0].seq) != (prio, seq) or chat in self._busy:
                continue  # stale: the chat's head changed, or it is sending
            until = self._not_before.get(chat, 0.0)
            if until > now:
                heapq.heappush(self._cooling, (until, chat))
                continue
            job = heapq.heappop(queue)
            if not queue:
                del self._queued[chat]
            return job, None
        if self._cooling:
            return None, max(self._cooling[0][0] - now, 0.0)
        return None, None

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            job, wait = self._next(now)
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            if job.future.done():  # its caller gave up
                self._schedule_chat(job.chat_id)
                continue
            try:
                admission = await self.limiter.acquire(job.chat_id)
            except asyncio.CancelledError:
                self._push(job)
                raise
            except Exception as exc:  # the limiter's backend is down: wait, keep the job
                log.warning("send limiter unavailable", extra={"error": str(exc)[:200]})
                self._push(job)
                await asyncio.sleep(0.5)
                continue
            if not admission.granted:
                if admission.scope == "chat":  # another process is sending to this chat
                    self._not_before[job.chat_id] = time.monotonic() + admission.wait
                    self._push(job)
                else:  # global: hold everything; a local answer may free a slot sooner
                    self._push(job)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), admission.wait)
                continue
            self._busy.add(job.chat_id)
            task = asyncio.create_task(self._deliver(job, admission.token))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, job: _Job, token: str) -> None:
        assert self.bot is not None
        used, retry_after = True, 0.0
        requeue = False
        job.attempts += 1
        try:
            if await self.store.is_blocked(job.chat_id):
                used = False
                self._resolve(job, SendResult("blocked", job.attempts - 1, error="chat blocked"))
                return
            message = await self.bot.send_message(job.chat_id, job.text)
            self._resolve(job, SendResult("sent", job.attempts, message_id=message.message_id))
        except TelegramRetryAfter as exc:
            retry_after = float(exc.retry_after)
            log.warning(
                "telegram flood control",
                extra={"chat_id": job.chat_id, "retry_after": retry_after},
            )
            error = f"429: retry after {exc.retry_after}s"
            if retry_after > self.max_retry_after:
                self._resolve(job, SendResult("failed", job.attempts, error=error))
            else:
                requeue = self._retry_or_fail(job, error)
        except TelegramForbiddenError as exc:
            await self._mark_blocked(job, exc.message)
        except TelegramBadRequest as exc:  # chat not found, bad text: retrying cannot help
            self._resolve(job, SendResult("failed", job.attempts, error=exc.message[:300]))
        except (TelegramNetworkError, TelegramServerError) as exc:
            retry_after = min(2.0**job.attempts, 30.0)
            requeue = self._retry_or_fail(job, exc.message[:300])
        except TelegramAPIError as exc:
            self._resolve(job, SendResult("failed", job.attempts, error=exc.message[:300]))
        except asyncio.CancelledError:
            self._resolve(job, SendResult("failed", job.attempts, error="sender stopped"))
            raise
        except Exception as exc:
            log.exception("telegram send failed")
            self._resolve(job, SendResult("failed", job.attempts, error=type(exc).__name__))
        finally:
            cooldown = self.limiter.cooldown(retry_after) if used else 0.0
            self._not_before[job.chat_id] = time.monotonic() + cooldown
            try:
                await self.limiter.release(job.chat_id, token, used=used, retry_after=retry_after)
            except Exception as exc:  # the slot frees by itself after the lease
                log.warning("send limiter release failed", extra={"error": str(exc)[:200]})
            self._busy.discard(job.chat_id)
            if requeue:
                self._push(job)
            else:
                self._schedule_chat(job.chat_id)
            if len(self._not_before) > 10_000:
                now = time.monotonic()
                for chat in [c for c, t in self._not_before.items() if t <= now]:
                    del self._not_before[chat]
            self._wake.set()

    def _retry_or_fail(self, job: _Job, error: str) -> bool:
        if job.attempts >= self.max_attempts:
            self._resolve(job, SendResult("failed", job.attempts, error=error))
            return False
        return True

    async def _mark_blocked(self, job: _Job, reason: str) -> None:
        try:
            await self.store.block_chat(job.chat_id, reason)
        finally:
            log.info("chat blocked the bot", extra={"chat_id": job.chat_id})
            self._resolve(job, SendResult("blocked", job.attempts, error=reason[:300]))
            for queued in self._queued.pop(job.chat_id, []):
                self._resolve(
                    queued, SendResult("blocked", queued.attempts, error="chat blocked the bot")
                )

    @staticmethod
    def _resolve(job: _Job, result: SendResult) -> None:
        if not job.future.done():
            job.future.set_result(result)
