"""Periodic in-process work: the one way this code base runs "every N seconds" on a node
(presence refresh and expiry, watching-now ticks, the bot's heartbeat, metric samples).

A failing run is logged (with the job's name; a dependency that is down as one warning every
10 s, see `errors.log_failure`) and the next one runs as planned: a periodic job never dies of
one error. The interval may be a number or a function read before
each wait, so a test or an operator can change it on a running job. Work that must happen once
per cluster, or survive a restart, belongs to the durable scheduler (`server/scheduler.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from server import errors

log = logging.getLogger("ours.periodic")

Interval = float | Callable[[], float]


class Periodic:
    """A set of named periodic jobs, started and stopped together."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def every(self, interval: Interval, name: str, job: Callable[[], Awaitable[object]]) -> None:
        """Run `job` every `interval` seconds (the first run after one interval)."""
        if name in self._tasks:
            raise ValueError(f"periodic job {name!r} already running")
        self._tasks[name] = asyncio.create_task(self._run(interval, name, job), name=name)

    @property
    def names(self) -> list[str]:
        return list(self._tasks)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @staticmethod
    async def _run(interval: Interval, name: str, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval() if callable(interval) else interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.log_failure(log, "periodic job failed", exc, job=name)
