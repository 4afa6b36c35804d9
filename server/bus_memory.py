"""In-process bus for the embedded default: durable in the event log, delivered in memory.

publish() writes the event log row first (that is the durability), then queues the event for
each consumer group. Which group finished which event is kept in storage, so events that were
published but not handled before a crash are redelivered at the next start. Dead letters live
in storage; a replay (from this process or from `ours dlq replay`) is announced with
PostgreSQL NOTIFY and picked up by the running server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from server import errors
from server.bus import Bus, Consumer
from server.bus_memory_store import MemoryBusStore
from server.eventlog import EventLog
from server.events import Event
from server.personal_data import Erasure
from server.storage import Storage

log = logging.getLogger("ours.bus")

RESCAN_CHANNEL = "ours_bus_rescan"
BATCH = 256  # events a consumer takes from its queue at once
DOWN_RETRY_S = 0.25  # a batch waiting for the database tries again after this, doubling
DOWN_RETRY_MAX_S = 2.0
WATCH_S = 2.0  # how often the NOTIFY listener is checked, and a wanted rescan done


class MemoryBus(Bus):
    def __init__(
        self, storage: Storage, max_deliveries: int = 5, queue_size: int = 100_000
    ) -> None:
        super().__init__(max_deliveries)
        self.storage = storage
        self.events = EventLog(storage)
        self.store = MemoryBusStore(storage)
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._pending: dict[str, set[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_size = queue_size
        self._listen_conn: Any = None
        self._consuming = False
        self._rescan_wanted = False

    async def start(self, *, consume: bool = True) -> None:
        self._consuming = consume
        if not consume:
            return
        for group, consumer in self.consumers.items():
            self._queues[group] = asyncio.Queue(self._queue_size)
            self._pending[group] = set()
            self._tasks.append(asyncio.create_task(self._run(consumer), name=f"bus:{group}"))
        await self._rescan()
        await self._listen()
        self._tasks.append(asyncio.create_task(self._watch(), name="bus:watch"))

    async def close(self) -> None:
        await self._unlisten()
        # let queued events finish briefly, then stop
        for q in self._queues.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.join(), timeout=2)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def publish(self, event: Event) -> bool:
        if not await self.events.append(event):
            return False
        if self._consuming:
            for group in self.consumers:
                self._enqueue(group, event)
        return True

    async def publish_many(self, events: list[Event]) -> list[bool]:
        """One event-log statement for all of them, then queued like `publish`."""
        fresh = await self.events.append_many(events)
        if self._consuming:
            for event in events:
                if event.id in fresh:
                    for group in self.consumers:
                        self._enqueue(group, event)
        return [e.id in fresh for e in events]

    def _enqueue(self, group: str, event: Event) -> None:
        pending = self._pending[group]
        if event.id in pending:
            return
        try:
            self._queues[group].put_nowait(event)
        except asyncio.QueueFull:
            # stays undone in storage; the next rescan delivers it
            log.warning("consumer queue full; event left for rescan", extra={"group": group})
            self._rescan_wanted = True
            return
        pending.add(event.id)

    async def _run(self, consumer: Consumer) -> None:
        """Take what is queued (up to BATCH events) at once: one query finds which are done
        already, one statement marks them done, and the handlers run back to back, so a
        burst costs two round trips and its socket writes coalesce into one per socket."""
        queue = self._queues[consumer.group]
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._deliver_while_down(consumer, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one batch stop the consumer; the rescan has it
                errors.log_failure(log, "bus consumer failed", exc, group=consumer.group)
                self._rescan_wanted = True
            finally:
                pending = self._pending[consumer.group]
                for event in batch:
                    pending.discard(event.id)
                    queue.task_done()

    async def _deliver_while_down(self, consumer: Consumer, batch: list[Event]) -> None:
        """Deliver `batch`; while the database is down (or a handler's dependency is), the
        batch waits and is tried again, in order, so an outage drops nothing and the events
        behind it queue up. What was handled before the outage is not handled twice."""
        handled: set[str] = set()
        wait = DOWN_RETRY_S
        while True:
            try:
                await self._deliver(consumer, batch, handled)
                return
            except Exception as exc:
                if errors.refusal_for_outage(exc, log) is None:
                    raise
            await asyncio.sleep(wait)
            wait = min(wait * 2, DOWN_RETRY_MAX_S)

    async def _deliver(self, consumer: Consumer, batch: list[Event], handled: set[str]) -> None:
        group = consumer.group
        done = await self.store.done_among(group, [e.id for e in batch]) | handled
        todo = [e for e in batch if e.id not in done]
        if await self._handle_many(consumer, todo):
            handled.update(e.id for e in todo)
        else:
            for event in todo:
                try:
                    await self._handle(consumer, event)
                except Exception as exc:
                    if errors.dependency_down(exc) is not None:
                        raise  # the batch waits for it
                    # record what went through, then retry this one (in order) before the rest
                    await self._mark(group, handled)
                    await self._retry(consumer, event, f"{type(exc).__name__}: {exc}")
                    continue
                handled.add(event.id)
        await self._mark(group, handled)

    async def _mark(self, group: str, handled: set[str]) -> None:
        await self.store.mark_done_many(group, list(handled))
        handled.clear()

    async def _retry(self, consumer: Consumer, event: Event, error: str) -> None:
        """Attempts 2..max_deliveries with backoff; then the dead letters."""
        for attempt in range(1, self.max_deliveries + 1):
            log.warning(
                "consumer attempt failed",
                extra={"group": consumer.group, "attempt": attempt, "error": error},
            )
            if attempt == self.max_deliveries:
                break
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
            try:
                await self._handle(consumer, event)
            except Exception as exc:
                if errors.dependency_down(exc) is not None:
                    raise  # not the event's fault: the batch waits for the dependency
                error = f"{type(exc).__name__}: {exc}"
                continue
            await self.store.mark_done(consumer.group, event.id)
            return
        await self.store.add_dead_letter(consumer.group, event, error, self.max_deliveries)
        log.error("event dead-lettered", extra={"group": consumer.group, "error": error})

    async def _listen(self) -> None:
        self._listen_conn = await self.storage.db.acquire()
        await self._listen_conn.add_listener(RESCAN_CHANNEL, self._on_notify)

    async def _unlisten(self) -> None:
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.remove_listener(RESCAN_CHANNEL, self._on_notify)
            with contextlib.suppress(Exception):
                await self.storage.db.release(self._listen_conn)
            self._listen_conn = None

    async def _watch(self) -> None:
        """Every WATCH_S: the NOTIFY connection, lost with its server (a PostgreSQL restart),
        is opened again, and what may have been missed meanwhile (a replay announced, an event
        a full queue or a failed batch left in storage) is found by a rescan."""
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                if self._listen_conn is None or self._listen_conn.is_closed():
                    await self._unlisten()
                    await self._listen()
                    self._rescan_wanted = True
                if self._rescan_wanted:
                    self._rescan_wanted = False
                    await self._rescan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._rescan_wanted = True
                errors.log_failure(log, "bus watcher failed; trying again", exc)

    async def _rescan(self) -> None:
        for group in self._queues:
            for event in await self.store.undone_events(group):
                self._enqueue(group, event)

    def _on_notify(self, *_: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._rescan())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def ping(self) -> bool:
        return await self.storage.ping()

    async def lag(self) -> dict[str, int]:
        return {g: len(p) for g, p in self._pending.items()}

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.store.dead_letters(limit)

    async def dead_letter_count(self) -> int:
        return await self.store.count_dead_letters()

    async def erase_user(self, erasure: Erasure) -> None:
        await self.store.erase_user(erasure)

    async def replay(self, ids: list[str] | None = None) -> int:
        taken = await self.store.take_dead_letters(ids)
        if taken:
            await self.storage.db.execute(f"NOTIFY {RESCAN_CHANNEL}")
        return len(taken)
