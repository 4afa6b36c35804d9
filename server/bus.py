"""The event bus: one small interface, with its backends side by side (bus_memory, bus_redis).

A publish returns only once the event is durable in the backend. Consumers are named groups;
each event is handled once per group (idempotent on event id), retried on failure, and moved
to the dead letters after `max_deliveries` failed attempts.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from server import logs, metrics
from server.events import Event
from server.personal_data import Erasure

log = logging.getLogger("ours.bus")

Handler = Callable[[Event], Awaitable[None]]
ManyHandler = Callable[[list[Event]], Awaitable[None]]


@dataclass(slots=True)
class Consumer:
    group: str
    handler: Handler
    #: one consumer at a time across the cluster, in stream order (e.g. fan-out, whose room
    #: order must follow publish order); others take over when its lease lapses
    exclusive: bool = False
    #: optional: handle a run of queued events in one call (e.g. one Redis round trip for a
    #: burst); if it raises, the events are handled one by one with `handler`
    many: ManyHandler | None = None


class Bus(abc.ABC):
    """Publish events; run named consumer groups over them."""

    def __init__(self, max_deliveries: int = 5) -> None:
        self.consumers: dict[str, Consumer] = {}
        self.max_deliveries = max_deliveries

    def subscribe(
        self,
        group: str,
        handler: Handler,
        *,
        exclusive: bool = False,
        many: ManyHandler | None = None,
    ) -> None:
        if group in self.consumers:
            raise ValueError(f"consumer group {group!r} already subscribed")
        self.consumers[group] = Consumer(group, handler, exclusive, many)

    @abc.abstractmethod
    async def start(self, *, consume: bool = True) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, event: Event) -> bool:
        """Make `event` durable and schedule it for every group; False if the id was seen."""

    async def publish_many(self, events: list[Event]) -> list[bool]:
        """`publish` each of `events` (a backend may make them durable together); per event,
        False if its id was seen."""
        return [await self.publish(e) for e in events]

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    @abc.abstractmethod
    async def lag(self) -> dict[str, int]:
        """Events not yet handled, per consumer group."""

    async def groups(self) -> dict[str, dict[str, int]]:
        """Per consumer group: `lag` (not yet handed to a consumer) and `pending` (handed out,
        not yet acknowledged). A backend that cannot tell them apart counts all as lag."""
        return {g: {"lag": n, "pending": 0} for g, n in (await self.lag()).items()}

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def dead_letter_count(self) -> int: ...

    @abc.abstractmethod
    async def replay(self, ids: list[str] | None = None) -> int:
        """Put dead letters (all, or these ids) back for their consumer group; return count."""

    @abc.abstractmethod
    async def erase_user(self, erasure: Erasure) -> None:
        """Erasure: what this backend keeps in PostgreSQL about the user."""

    async def _handle(self, consumer: Consumer, event: Event) -> None:
        """Run one handler with logging context and metrics; exceptions propagate."""
        token = logs.event_id.set(event.id)
        started = time.perf_counter()
        try:
            await consumer.handler(event)
            metrics.EVENTS_CONSUMED.labels(consumer.group, event.type, "ok").inc()
        except Exception:
            metrics.EVENTS_CONSUMED.labels(consumer.group, event.type, "error").inc()
            raise
        finally:
            metrics.CONSUMER_SECONDS.labels(consumer.group).observe(time.perf_counter() - started)
            logs.event_id.reset(token)

    async def _handle_many(self, consumer: Consumer, events: list[Event]) -> bool:
        """Run the group's batch handler over `events` if it has one and there are several;
        False if it has none or it failed (then handle them one by one)."""
        if consumer.many is None or len(events) < 2:
            return False
        started = time.perf_counter()
        try:
            await consumer.many(events)
        except Exception as exc:
            log.warning(
                "batch handler failed; handling one by one",
                extra={"group": consumer.group, "events": len(events), "error": repr(exc)},
            )
            return False
        metrics.CONSUMER_SECONDS.labels(consumer.group).observe(
            (time.perf_counter() - started) / len(events)
        )
        for event in events:
            metrics.EVENTS_CONSUMED.labels(consumer.group, event.type, "ok").inc()
        return True
