"""ActivityFeature ("activity"): wires activity streams into the node.

Services: `service` (handlers in namespaces/activity.py call it). Jobs: `activity.notify`
(match notifications for one new entry) and `activity.purge` (deletes expired entries, then
schedules its next run). `clock` is the one source of "now" for retention; tests replace it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from server.activity.service import NOTIFY_JOB, PURGE_JOB, Activity
from server.feature import Feature

if TYPE_CHECKING:
    from server.node import Node


def utcnow() -> datetime:
    return datetime.now(UTC)


class ActivityFeature(Feature):
    name = "activity"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.clock: Callable[[], datetime] = utcnow
        self.service = Activity(node, self.now)
        node.scheduler.register(NOTIFY_JOB, self.service.notify_matches)
        node.scheduler.register(PURGE_JOB, self.service.purge_job)

    def now(self) -> datetime:
        return self.clock()

    async def start(self) -> None:
        await self.service.schedule_purge()
