"""Platform health as the bot reports it: sockets per namespace and connected users (from the
namespaces' verified principals), the error rate (5xx HTTP answers and `internal` socket acks in
the Prometheus counters), bus lag and dead letters. Each serving node samples itself every few
seconds and writes a heartbeat row, so `/status` from any process sums every live node.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from bots.store import BotStore
from server import metrics
from server.clock import Clock

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.bot.health")

ERROR_WINDOW_S = 300  # the error rate /status and the brief report
HEARTBEAT_FRESH = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Snapshot:
    connections: dict[str, int]
    users_connected: int
    nodes: int
    requests: int  # HTTP requests + socket events in the last `window_s`
    errors: int  # of which 5xx / internal
    window_s: int
    lag: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def request_counters() -> tuple[int, int]:
    """(requests, errors) since the process started: HTTP + socket events, 5xx + internal."""
    requests = errors = 0
    for metric in metrics.HTTP_REQUESTS.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                requests += int(s.value)
                if s.labels.get("status", "").startswith("5"):
                    errors += int(s.value)
    for metric in metrics.SOCKET_EVENTS.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                requests += int(s.value)
                if s.labels.get("result") == "internal":
                    errors += int(s.value)
    return requests, errors


class Health:
    def __init__(self, node: Node, store: BotStore, clock: Clock, *, interval: float = 5.0) -> None:
        self.node = node
        self.store = store
        self.clock = clock
        self.interval = interval
        self.node_id = uuid.uuid4().hex[:12]
        self.report = True  # write heartbeats (a serving node); `ours bot` turns this off
        self.listeners: list[Callable[[Health], Awaitable[None]]] = []
        self._samples: deque[tuple[float, int, int]] = deque()
        self._beats = 0
        self._running = False

    # -- local numbers ----------------------------------------------------------------------

    def connections(self) -> dict[str, int]:
        return self.node.connections()

    def users(self) -> set[str]:
        return self.node.users()

    def sample(self) -> None:
        now = time.monotonic()
        requests, errors = request_counters()
        self._samples.append((now, requests, errors))
        while len(self._samples) > 2 and self._samples[1][0] < now - 2 * ERROR_WINDOW_S:
            self._samples.popleft()

    def window(self, seconds: float) -> tuple[int, int]:
        """(requests, errors) in about the last `seconds` (since start if younger)."""
        if not self._samples:
            self.sample()
        t_last, req_last, err_last = self._samples[-1]
        base = self._samples[0]
        for s in self._samples:
            if s[0] <= t_last - seconds:
                base = s
            else:
                break
        return req_last - base[1], err_last - base[2]

    # -- heartbeat --------------------------------------------------------------------------

    def start(self) -> None:
        self.sample()
        self._running = True
        self.node.periodic.every(lambda: self.interval, "bot.health", self._tick)

    async def close(self) -> None:
        """The node stops the periodic beat; a serving node's heartbeat row goes at once."""
        if self._running and self.report:
            with contextlib.suppress(Exception):
                await self.store.delete_node_stats(self.node_id)
        self._running = False

    async def _tick(self) -> None:
        await self.beat()
        self._beats += 1
        if self._beats % 720 == 1:  # about hourly
            await self.store.prune(self.clock.now())

    async def beat(self) -> None:
        """Sample the counters, write this node's heartbeat, let the alert rules look."""
        self.sample()
        if self.report:
            requests, errors = self.window(ERROR_WINDOW_S)
            await self.store.put_node_stats(
                self.node_id,
                self.connections(),
                len(self.users()),
                requests,
                errors,
                self.clock.now(),
            )
        for listener in self.listeners:
            await listener(self)

    # -- the platform view ------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """This node's live numbers plus every other node's fresh heartbeat."""
        self.sample()
        connections = self.connections()
        users = len(self.users())
        requests, errors = self.window(ERROR_WINDOW_S)
        nodes = 1 if self.report else 0
        others = await self.store.other_node_stats(self.node_id, self.clock.now() - HEARTBEAT_FRESH)
        for row in others:
            nodes += 1
            for ns, n in row["connections"].items():
                connections[ns] = connections.get(ns, 0) + int(n)
            users += int(row["users"])
            requests += int(row["requests"])
            errors += int(row["errors"])
        lag: dict[str, int] = {}
        dead = 0
        with contextlib.suppress(Exception):
            lag = dict(sorted((await self.node.bus.lag()).items()))
        with contextlib.suppress(Exception):
            dead = len(await self.node.bus.dead_letters(1000))
        return Snapshot(connections, users, nodes, requests, errors, ERROR_WINDOW_S, lag, dead)
