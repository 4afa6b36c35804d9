"""Fan-out: deliver one emit to every socket of a room on every node, and the bus consumer
that turns events into room emits.

Everything that sends to a room goes through `Fanout.emit`, so the delivery path (stock
python-socketio manager today; Redis pub/sub between nodes) can change behind one interface.

Admission control: past its capacity, fan-out keeps delivering at that capacity and the
excess publishes are refused at once (`refusal`, answered 503 + Retry-After by `POST
/v1/events`), instead of being taken and queued until every event is late. A publish is
refused while this node's sockets hold a backlog above the bound (`Delivery.backlogged`) or
while the events the consumer delivers waited longer than `max_delay_s` since they were
published. Nothing waits on the publish path: a publisher that was made to wait held its
connection, so the accepted rate fell to its connections ÷ the wait (the collapse of issue 21).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from server import jsonutil, metrics
from server.events import Event
from server.managers import Delivery
from server.server_events import check_emitted

#: event type prefix -> namespace its socket event is emitted on
NAMESPACE_OF: dict[str, str] = {
    "content": "/feed",
    "governance": "/feed",
    "live": "/live",
    "hours": "/notifications",
    "user": "/notifications",
    "storefront": "/notifications",
    "message": "/messages",
}


CHUNK_BYTES = 64 * 1024  # payload bytes per batched emit
#: the longest a late delivery refuses publishes (s): an idle consumer measures nothing, so
#: an old reading must not refuse publishes for ever
DELAY_FRESH_S = 1.0


def namespace_for(event_type: str) -> str:
    return NAMESPACE_OF[event_type.split(".", 1)[0]]


class Fanout:
    """Room delivery across nodes: an AsyncServer (whose client manager is Redis-backed when
    several nodes share Redis) or, in `ours worker`, a write-only Redis manager."""

    def __init__(
        self, manager: Delivery, backpressure_wait_s: float = 2.0, max_delay_s: float = 0.25
    ) -> None:
        # the AsyncServer's manager, or (ours worker) a write-only manager of its own
        self.manager = manager
        self.backpressure_wait_s = backpressure_wait_s
        self.max_delay_s = max_delay_s
        # after a late delivery (wall clock, as the events' `ts`): refuse until then, and why
        self._late_until = 0.0
        self._late_s = 0.0

    def refusal(self) -> str | None:
        """Why a publish should be refused now (fan-out is past its capacity), or None. Never
        waits."""
        if self.manager.backlogged():
            return "fan-out is held back by full socket buffers; retry shortly"
        if self._late_until and time.time() < self._late_until:
            return f"fan-out is {self._late_s:.1f}s behind the publishes; retry shortly"
        return None

    async def emit(
        self,
        event: str,
        data: Any,
        *,
        namespace: str,
        room: str | list[str],
        skip_sid: str | list[str] | None = None,
        volatile: bool = False,
    ) -> None:
        """Send to every socket of `room` on every node. Room events get an offset and are
        kept for recovery; `volatile` ones (typing, counts) are sent only to who is there."""
        check_emitted(event, data)
        await self.manager.emit(
            event, data, namespace=namespace, room=room, skip_sid=skip_sid, volatile=volatile
        )

    async def emit_run(self, event: str, datas: list[Any], *, namespace: str, room: str) -> None:
        """A run of room events (one event name) to one room, in order: kept for recovery
        like `emit`'s, logged and published in one round trip, and written to each socket in
        one go."""
        for data in datas:
            check_emitted(event, data)
        if datas:
            await self.manager.emit_run(namespace, room, event, datas)

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms), each to its own rooms, in one call:
        on Redis one round trip and one publish for the lot (e.g. a notification to each of
        2,000 users' rooms), in-process one pass."""
        for event, data, _, _ in items:
            check_emitted(event, data)
        if items:
            await self.manager.emit_many(items)

    @property
    def roomlog(self) -> Any:
        return self.manager.roomlog

    async def recover(
        self, sid: str, namespace: str, wanted: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        """Join `wanted` rooms and replay what the socket missed since each offset."""
        result: dict[str, dict[str, Any]] = await self.manager.recover(
            sid, namespace, wanted, self.manager.roomlog
        )
        return result

    async def current_offset(self, namespace: str, room: str) -> str:
        return str(await self.manager.roomlog.current(namespace, room))

    async def _control(self, namespace: str, op: dict[str, Any]) -> None:
        await self.manager.user_control(namespace, op)

    async def join_user(self, namespace: str, user_id: str, room: str) -> None:
        """Put every socket of `user_id` on `namespace` (any node) into `room`."""
        await self._control(namespace, {"op": "enter", "user": user_id, "room": room})

    async def leave_user(self, namespace: str, user_id: str, room: str) -> None:
        await self._control(namespace, {"op": "leave", "user": user_id, "room": room})

    async def move_user(self, namespace: str, user_id: str, room: str, to: str) -> None:
        """Move the sockets of `user_id` on `namespace` (any node) that are in `room` to `to`."""
        await self._control(namespace, {"op": "move", "user": user_id, "room": room, "to": to})

    async def disconnect_user(self, namespace: str, user_id: str, code: str, reason: str) -> None:
        """Disconnect every socket of `user_id` on `namespace`, telling it why first."""
        await self._control(
            namespace, {"op": "disconnect", "user": user_id, "code": code, "reason": reason}
        )

    async def _hold(self) -> None:
        await self.manager.hold_while_congested(self.backpressure_wait_s)

    @property
    def batches(self) -> bool:
        """True when the manager emits a run of events in one round trip (Redis)."""
        return self.manager.batches

    async def deliver_many(self, events: list[Event]) -> None:
        """Bus consumer for a run of queued events: emitted in chunks of about CHUNK_BYTES
        (one Redis round trip each, so the nodes get them together and write each socket
        once), holding back between chunks while the sockets are backed up."""
        chunk: list[tuple[str, Any, str, list[str]]] = []
        size = 0
        for event in events:
            if not event.subjects:
                continue
            chunk.append((event.type, event.wire(), namespace_for(event.type), event.subjects))
            size += len(jsonutil.dumpb(event.payload)) + 256
            if size >= CHUNK_BYTES:
                await self._hold()
                await self.manager.emit_many(chunk)
                chunk, size = [], 0
        if chunk:
            await self._hold()
            await self.manager.emit_many(chunk)
        self._observe(events)

    async def deliver(self, event: Event) -> None:
        """Bus consumer: emit the envelope, named by its type, to the rooms in `subjects`."""
        if not event.subjects:
            return
        await self._hold()
        await self.emit(
            event.type,
            event.wire(),
            namespace=namespace_for(event.type),
            room=event.subjects if len(event.subjects) > 1 else event.subjects[0],
        )
        self._observe([event])

    def _observe(self, events: list[Event]) -> None:
        """Fan-out latency (metric) and, for admission, the longest wait among `events`: an
        event that waited `w` > `max_delay_s` refuses publishes for `w - max_delay_s` (at most
        DELAY_FRESH_S), the time it takes to work off the excess; one in time ends that."""
        now = time.time()
        longest = 0.0
        for event in events:
            waited = max(0.0, now - datetime.fromisoformat(event.ts).timestamp())
            metrics.FANOUT_LATENCY.observe(waited)
            longest = max(longest, waited)
        if not events:
            return
        excess = longest - self.max_delay_s
        if excess > 0:
            self._late_until, self._late_s = now + min(excess, DELAY_FRESH_S), longest
        else:
            self._late_until = 0.0
