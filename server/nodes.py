"""Cluster membership: every running node (`ours serve`, `ours worker`, `ours bot`) writes a
heartbeat row in the `nodes` table (migration 0010) every `OURS_NODE_HEARTBEAT_S` seconds with
what it carries — connections per namespace, users, rooms, event-loop lag, fan-out backlog,
events handled — so any node can show the whole cluster (`ours status`,
`GET /v1/admin/cluster`, the console).

PostgreSQL rather than Redis: every deployment has it (the embedded default too), and the rows
outlive a node that dies. A node that stops cleanly marks its row `stopped`; a node that dies
stops beating and is shown `gone` once its row is older than three heartbeats. Rows not seen
for an hour are pruned.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any, Literal

from server.clock import Clock, SystemClock
from server.storage import Storage, Store

log = logging.getLogger("ours.nodes")

PRUNE_AFTER = timedelta(hours=1)
LAG_PROBE_S = 0.25  # how often the event-loop lag probe runs

State = Literal["up", "gone", "stopped"]


def version() -> str:
    try:
        return metadata.version("ours-comms")
    except metadata.PackageNotFoundError:  # a checkout run without `pip install -e .`
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a node is: its id (host:pid:random, as the bus names its consumers), role, host."""

    id: str
    role: str  # serve | worker | bot
    host: str
    pid: int
    version: str

    @classmethod
    def here(cls, role: str) -> Identity:
        host = socket.gethostname()
        pid = os.getpid()
        return cls(f"{host}:{pid}:{uuid.uuid4().hex[:6]}", role, host, pid, version())


class NodeStore(Store):
    """SQL of the `nodes` table."""

    async def beat(
        self, me: Identity, url: str | None, started_at: datetime, now: datetime, stats: Any
    ) -> None:
        await self.db.execute(
            "INSERT INTO nodes (id, role, host, pid, version, url, started_at, seen_at, stats)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (id) DO UPDATE SET seen_at = $8, stats = $9, url = $6,"
            " stopped_at = NULL",
            me.id,
            me.role,
            me.host,
            me.pid,
            me.version,
            url,
            started_at,
            now,
            stats,
        )

    async def stopped(self, node_id: str, now: datetime) -> None:
        await self.db.execute(
            "UPDATE nodes SET stopped_at = $2, seen_at = $2 WHERE id = $1", node_id, now
        )

    async def prune(self, before: datetime) -> int:
        done = await self.db.execute("DELETE FROM nodes WHERE seen_at < $1", before)
        return int(done.split()[-1])

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, role, host, pid, version, url, started_at, seen_at, stopped_at, stats"
            " FROM nodes ORDER BY started_at, id"
        )
        return [dict(r) for r in rows]


class Nodes:
    """This node's heartbeat and everyone's rows. `sample` returns this node's numbers (the
    node hands in a function, so this module needs nothing of it)."""

    def __init__(
        self,
        storage: Storage,
        me: Identity,
        sample: Callable[[], dict[str, Any]],
        *,
        interval: float,
        clock: Clock | None = None,
    ) -> None:
        self.store = NodeStore(storage)
        self.me = me
        self.sample = sample
        self.interval = interval
        self.clock: Clock = clock or SystemClock()
        self.url: str | None = None  # where this node serves HTTP, when it knows
        self.started_at = self.clock.now()
        self._lag_last = 0.0
        self._lag_max = 0.0  # the worst loop lag since the last heartbeat, seconds
        self._beats = 0

    @property
    def gone_after(self) -> timedelta:
        return timedelta(seconds=max(5.0, 3 * self.interval))

    # -- this node --------------------------------------------------------------------------

    def probe_loop(self) -> None:
        """Run every LAG_PROBE_S by the node's periodic jobs: how late did this run start?"""
        now = time.monotonic()
        if self._lag_last:
            self._lag_max = max(self._lag_max, now - self._lag_last - LAG_PROBE_S)
        self._lag_last = now

    async def beat(self) -> None:
        stats = {**self.sample(), "loop_lag_ms": round(max(self._lag_max, 0.0) * 1000, 1)}
        self._lag_max = 0.0
        now = self.clock.now()
        await self.store.beat(self.me, self.url, self.started_at, now, stats)
        self._beats += 1
        if self._beats % 600 == 1:  # now and then: rows of nodes long gone
            await self.store.prune(now - PRUNE_AFTER)

    async def leave(self) -> None:
        """A clean stop: the row says `stopped` (not `gone`) until it is pruned."""
        await self.store.stopped(self.me.id, self.clock.now())

    # -- everyone ---------------------------------------------------------------------------

    async def list(self) -> list[dict[str, Any]]:
        """Every known node with its `state` and the seconds since its last heartbeat."""
        now = self.clock.now()
        out = []
        for row in await self.store.all():
            age = now - row["seen_at"]
            state: State = (
                "stopped"
                if row["stopped_at"] is not None
                else ("gone" if age > self.gone_after else "up")
            )
            out.append(
                {
                    "id": row["id"],
                    "role": row["role"],
                    "host": row["host"],
                    "pid": row["pid"],
                    "version": row["version"],
                    "url": row["url"],
                    "state": state,
                    "self": row["id"] == self.me.id,
                    "started_at": row["started_at"].isoformat(),
                    "seen_at": row["seen_at"].isoformat(),
                    "seen_s_ago": round(age.total_seconds(), 1),
                    "stats": row["stats"],
                }
            )
        return out
