"""Room logs for connection state recovery: every room event gets an epoch and a monotonic
offset and is kept for a window (2 minutes by default), so a client that comes back can get
what it missed, in order, exactly once.

An offset is the string "<epoch>:<id>". Each entry remembers the id before it, so a replay can
prove the chain from the client's offset is unbroken; a trimmed gap or a new epoch (the log was
lost: a restart of the in-process log, a flushed Redis) answers `recovered: false`.

Backends: in-process (`MemoryRoomLog`, here) and Redis Streams (`RedisRoomLog`, in
roomlog_redis.py), whose append is atomic with the cluster publish.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Entry:
    id: str
    prev: str
    message: dict[str, Any]  # {"ns", "event", "data", "eid"}


@dataclass(slots=True)
class Replay:
    recovered: bool
    entries: list[Entry]
    head: str | None  # offset of the newest entry, to resume from later
    reason: str = ""


def split(offset: str) -> tuple[str, str]:
    epoch, _, ident = offset.rpartition(":")
    return epoch, ident


class MemoryRoomLog:
    """In-process room logs (embedded default). The epoch changes with every process."""

    def __init__(self, window_s: float = 120.0, max_entries: int = 10_000) -> None:
        self.window = window_s
        self.max_entries = max_entries
        self.epoch = uuid.uuid4().hex[:12]
        self._logs: dict[str, deque[tuple[float, Entry]]] = {}
        self._seq: dict[str, int] = {}

    def _key(self, ns: str, room: str) -> str:
        return f"{ns}|{room}"

    def append(self, ns: str, room: str, message: dict[str, Any]) -> str:
        key = self._key(ns, room)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = deque()
        now = time.monotonic()
        while log and (now - log[0][0] > self.window or len(log) >= self.max_entries):
            log.popleft()
        seq = self._seq.get(key, 0) + 1
        prev = str(seq - 1) if seq > 1 else "0"
        self._seq[key] = seq
        log.append((now, Entry(str(seq), prev, message)))
        return f"{self.epoch}:{seq}"

    def head(self, ns: str, room: str) -> str:
        return f"{self.epoch}:{self._seq.get(self._key(ns, room), 0)}"

    async def since(self, ns: str, room: str, offset: str) -> Replay:
        epoch, ident = split(offset)
        if epoch != self.epoch:
            return Replay(False, [], self.head(ns, room), "epoch changed")
        key = self._key(ns, room)
        seq = self._seq.get(key, 0)
        try:
            after = int(ident)
        except ValueError:
            return Replay(False, [], self.head(ns, room), "bad offset")
        if after > seq:
            return Replay(False, [], self.head(ns, room), "offset from the future")
        oldest = time.monotonic() - self.window  # kept longer only until the next append
        entries = [e for t, e in self._logs.get(key, ()) if int(e.id) > after and t >= oldest]
        if after < seq and (not entries or entries[0].prev != str(after)):
            return Replay(False, [], self.head(ns, room), "outside the recovery window")
        return Replay(True, entries, self.head(ns, room))

    async def current(self, ns: str, room: str) -> str:
        return self.head(ns, room)

    async def forget_user(self, user_id: str) -> int:
        """Erasure: nothing is deleted here; this log is process memory, a two-minute window
        (docs/protocol.md, erasure)."""
        return 0

    async def close(self) -> None:
        self._logs.clear()
