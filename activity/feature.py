"""ActivityFeature ("activity"): wires activity streams into the node.

Services: `service` (handlers in namespaces/activity.py call it). Jobs: `activity.notify`
(match notifications for one new entry) and `activity.purge` (deletes expired entries, then
schedules its next run). `clock` is the one source of "now" for retention; tests replace it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activity.service import NOTIFY_JOB, PURGE_JOB, Activity, Notifications
from activity.store import ActivityStore
from server.clock import Clock, SystemClock
from server.feature import Feature
from server.node import Node
from server.personal_data import Erasure


class ActivityFeature(Feature):
    name = "activity"

    def __init__(self, node: Node, *, notifications: Notifications) -> None:
        """`notifications`: the router, for `match` notifications and their preference."""
        super().__init__(node)
        self.clock: Clock = SystemClock()
        self.store = ActivityStore(node.storage)
        self.service = Activity(self.store, node.scheduler, self.now, notifications)
        node.scheduler.register(NOTIFY_JOB, self.service.notify_matches)
        node.scheduler.register(PURGE_JOB, self.service.purge_job)

    def now(self) -> datetime:
        return self.clock.now()

    async def start(self) -> None:
        await self.service.schedule_purge()

    async def export_user(self, user_id: str) -> dict[str, Any]:
        return {"activity": await self.service.export_user(user_id)}

    async def erase_user(self, erasure: Erasure) -> None:
        """The opt-in and every entry."""
        await self.store.erase_user(erasure)
