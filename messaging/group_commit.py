"""Group commit: calls that arrive while the previous batch is being written are written
together, in one transaction, by one writer per process.

A call (`submit`) queues its item and waits for its own answer. When no batch is being
written, the writer starts at once with what is queued (a lone call is not held back); while a
batch is in flight, new calls queue up, and the next batch takes up to `max_batch` of them. The
writer answers every item of a batch: a value, or the exception that item alone failed with;
an exception out of the writer itself (the database is down) fails the whole batch. Batches
run one after another, so what one batch announces goes out before anything of the next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: a batch writer: one answer per item, in order (a value, or that item's own error)
Writer = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Writer[T, R], max_batch: int = 256) -> None:
        self.write = write
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue `item` for the next batch; its answer once that batch is written."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                answers = await self.write([item for item, _ in batch])
            except BaseException as e:  # the whole batch failed (e.g. the database is down)
                for _, future in batch:
                    if future.done():
                        continue
                    if isinstance(e, Exception):
                        future.set_exception(e)
                    else:
                        future.cancel()
                if not isinstance(e, Exception):
                    raise  # cancelled: the next `submit` starts another writer
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
