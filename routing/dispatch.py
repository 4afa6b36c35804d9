"""The dispatcher: sends queued deliveries when they are due, one loop per outward channel.

The delivery log is the outbox (durable in PostgreSQL). Each channel's loop leases due rows
(`FOR UPDATE SKIP LOCKED` plus a lease, so several processes share the work and a crashed one's
rows come back), groups them into messages (a single notification, or every waiting row of a
batch: one quiet-hours summary, one hourly email) and sends each message in its own task, at
most `concurrency` per channel. A channel that is slow or down only delays its own rows.

Outcomes: sent; skipped (nothing to send to, or read in-app meanwhile); failed for good
(the provider refused: invalid token, bad number); or retried with exponential backoff and
jitter, never sooner than the provider's Retry-After, and failed ("dead letter", reason
provider_error) after `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from routing import metrics, render
from routing.channels.base import (
    Message,
    OutboundChannel,
    PermanentError,
    Skip,
    TransientError,
)
from routing.preferences import Preferences
from routing.priorities import Channel, Priority
from routing.store import RouterStore
from routing.store.inbox import item
from routing.store.outbox import Outcome
from server import errors

log = logging.getLogger("ours.router.dispatch")

QUEUED_PER_SLOT = 4
RANK = {Priority.IMMEDIATE: 0, Priority.STANDARD: 1, Priority.BATCH: 2, Priority.SILENT: 3}


@dataclass(frozen=True, slots=True)
class _Lookups:
    notes: dict[int, Any]
    prefs: dict[str, Preferences]
    addresses: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 2.0  # seconds before the 2nd attempt (doubling, with +-50% jitter)
    cap: float = 3600.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        backoff = min(self.cap, self.base * 2 ** (attempts - 1)) * random.uniform(0.5, 1.5)
        if retry_after is None:
            return backoff
        # never before the provider said; a little spread so retries do not arrive together
        return max(backoff, retry_after) + random.uniform(0, min(5.0, retry_after * 0.1))


class Dispatcher:
    def __init__(
        self,
        store: RouterStore,
        channels: dict[Channel, OutboundChannel],
        now: Callable[[], datetime],
        *,
        retry: RetryPolicy,
        poll_interval: float = 0.5,
        lease_s: float = 120.0,
    ) -> None:
        self.store = store
        self.channels = channels
        self.now = now
        self.retry = retry
        self.poll_interval = poll_interval
        self.lease_s = lease_s
        self._wake = {ch: asyncio.Event() for ch in channels}
        self._inflight: dict[Channel, set[asyncio.Task[None]]] = {ch: set() for ch in channels}
        self._loops: list[asyncio.Task[None]] = []
        self._claiming = 0  # passes between leasing rows and starting their tasks
        self._outcomes: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        for ch in self.channels:
            self._loops.append(asyncio.create_task(self._loop(ch), name=f"router:{ch}"))

    async def close(self, grace: float = 5.0) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        pending = [t for tasks in self._inflight.values() for t in tasks]
        if pending:  # let sends in flight finish; leases bring back whatever does not
            _, late = await asyncio.wait(pending, timeout=grace)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def settle(self) -> None:
        """Send everything due now and wait for it (tests, and draining on demand)."""
        while True:
            claimed = 0
            for ch in self.channels:
                claimed += await self.run_channel(ch)
            tasks = [t for tasks in self._inflight.values() for t in tasks]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            elif self._claiming:
                await asyncio.sleep(0.01)
            elif not claimed:
                return

    # -- loop -------------------------------------------------------------------------------

    async def _loop(self, ch: Channel) -> None:
        wake = self._wake[ch]
        while True:
            try:
                claimed = await self.run_channel(ch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, a bug: log it, keep the loop alive
                errors.log_failure(log, "dispatcher pass failed", exc, channel=ch)
                claimed = 0
            if claimed:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll_interval)

    async def run_channel(self, ch: Channel) -> int:
        """Lease due rows of one channel (up to the free send slots) and start their sends;
        return how many messages were started."""
        channel = self.channels[ch]
        inflight = self._inflight[ch]
        # a few sends queue per send slot, so each pass leases a useful batch; a paced channel
        # leases no more than it sends in half a lease, so no lease runs out in its queue
        room = channel.concurrency * QUEUED_PER_SLOT
        if channel.rate is not None:
            room = max(1, min(room, int(channel.rate * self.lease_s / 2)))
        while len(inflight) >= room:
            await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)
        self._claiming += 1
        try:
            rows = await self.store.outbox.claim_due(
                ch.value, self.now(), room - len(inflight), self.lease_s
            )
            groups: dict[tuple[str, str], list[Any]] = {}
            for row in rows:
                key = (row["user_id"], row["batch_key"] or f"#{row['id']}")
                groups.setdefault(key, []).append(row)
            if groups:
                # what every send of this pass needs, in three queries instead of three each
                users = list({u for u, _ in groups})
                ctx = _Lookups(
                    await self.store.inbox.by_ids(list({r["notification_id"] for r in rows})),
                    await self.store.prefs.load(users),
                    await channel.addresses(users),
                )
            for group in groups.values():
                task = asyncio.create_task(self._send(channel, group, ctx))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        finally:
            self._claiming -= 1
        return len(groups)

    # -- one message ------------------------------------------------------------------------

    async def _send(self, channel: OutboundChannel, rows: list[Any], ctx: _Lookups) -> None:
        ch = channel.name
        try:
            await self._send_rows(channel, rows, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed; the lease brings the rows back
            log.exception("delivery failed unexpectedly", extra={"channel": ch})

    async def _send_rows(self, channel: OutboundChannel, rows: list[Any], ctx: _Lookups) -> None:
        ch = channel.name
        now = self.now()
        notes = ctx.notes
        read = [r["id"] for r in rows if notes[r["notification_id"]]["read_at"] is not None]
        if read:
            await self._drop(ch, read, now, "read", "read in-app before it went out")
        live = [r for r in rows if notes[r["notification_id"]]["read_at"] is None]
        if not live:
            return
        user = live[0]["user_id"]
        prefs = ctx.prefs[user]
        # the user may have changed their mind while this waited (quiet hours, a batch, retries)
        refused = [r["id"] for r in live if prefs.refuses(ch, notes[r["notification_id"]]["kind"])]
        if refused:
            await self._drop(
                ch, refused, now, "preference", "preferences changed before it went out"
            )
            live = [r for r in live if r["id"] not in refused]
            if not live:
                return
        ids = [r["id"] for r in live]
        msg = self._message(ch, live, notes)
        msg.address = ctx.addresses.get(user)
        started = time.perf_counter()
        try:
            sent = await channel.send(msg, prefs)
        except Skip as exc:
            await self._record(Outcome(ids, "skipped", now, reason=exc.reason, detail=exc.detail))
            self._count(ch, "skipped", exc.reason, len(ids))
            return
        except PermanentError as exc:
            await self._record(Outcome(ids, "failed", now, reason=exc.reason, detail=exc.detail))
            self._count(ch, "failed", exc.reason, len(ids))
            return
        except TransientError as exc:
            await self._retry(ch, live, exc.detail, exc.retry_after, now)
            return
        except Exception as exc:
            log.warning("channel send raised", extra={"channel": ch}, exc_info=True)
            await self._retry(ch, live, f"{type(exc).__name__}: {exc}"[:500], None, now)
            return
        finally:
            metrics.SEND_SECONDS.labels(ch.value).observe(time.perf_counter() - started)
        detail = sent.detail
        if len(live) > 1:
            detail = f"one message for {len(live)} notifications" + (
                f"; {detail}" if detail else ""
            )
        await self._record(
            Outcome(
                ids,
                "sent",
                self.now(),
                keep_reason=True,
                detail=detail,
                provider_id=sent.provider_id,
            )
        )
        self._count(ch, "sent", "", len(ids))

    async def _drop(
        self, ch: Channel, ids: list[int], now: datetime, reason: str, detail: str
    ) -> None:
        """Skip rows without trying them: read meanwhile, or no longer wanted."""
        await self._record(
            Outcome(ids, "skipped", now, reason=reason, detail=detail, attempted=False)
        )
        self._count(ch, "skipped", reason, len(ids))

    async def _retry(
        self, ch: Channel, rows: list[Any], error: str, retry_after: float | None, now: datetime
    ) -> None:
        ids = [r["id"] for r in rows]
        attempts = max(r["attempts"] for r in rows) + 1
        if attempts >= self.retry.max_attempts:
            await self._record(
                Outcome(
                    ids,
                    "failed",
                    now,
                    reason="provider_error",
                    detail=f"gave up after {attempts} attempts: {error}"[:1000],
                )
            )
            self._count(ch, "failed", "provider_error", len(ids))
            log.error("delivery dead-lettered", extra={"channel": ch, "error": error})
            return
        delay = self.retry.delay(attempts, retry_after)
        due = now + timedelta(seconds=delay)
        await self._record(
            Outcome(
                ids,
                "queued",
                now,
                reason="provider_error",
                not_before=due,
                detail=f"attempt {attempts}/{self.retry.max_attempts} failed: {error};"
                f" next at {due.isoformat()}"[:1000],
            )
        )
        self._count(ch, "retry", "provider_error", len(ids))

    def _message(self, ch: Channel, rows: list[Any], notes: dict[int, Any]) -> Message:
        ordered = sorted(
            {r["notification_id"] for r in rows},
            key=lambda n: notes[n]["updated_at"],
            reverse=True,
        )
        items = [item(notes[n]) for n in ordered]
        priority = min((Priority(r["priority"]) for r in rows), key=RANK.__getitem__)
        batched = rows[0]["batch_key"] is not None
        title, body = render.summary(items)
        if batched and len(items) > 1 and str(rows[0]["batch_key"]).startswith("quiet:"):
            title = f"While you were away: {title}"
        first = min(r["id"] for r in rows)
        key = f"n{ordered[0]}" if not batched else f"{ch.value}-{rows[0]['user_id']}-{first}"
        data = {
            "notification_id": str(ordered[0]),
            "count": str(len(items)),
            "kind": notes[ordered[0]]["kind"] if len(items) == 1 else "summary",
        }
        return Message(
            user_id=rows[0]["user_id"],
            priority=priority,
            title=title,
            body=body,
            items=items,
            key=key,
            data=data,
        )

    async def _record(self, outcome: Outcome) -> None:
        """Write an outcome; sends finishing together share one UPDATE (group commit). Returns
        once it is written."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_outcomes())
        await done

    async def _write_outcomes(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self.store.outbox.finish([o for o, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    @staticmethod
    def _count(ch: Channel, state: str, reason: str, n: int) -> None:
        metrics.DELIVERIES.labels(ch.value, state, reason).inc(n)
