"""The chat gate: may this user send in this live now? One decision over a cached copy of the
live's chat state (on/ended, slow mode, bans, timeouts) plus the per-user last-send time that
slow mode needs. Backends side by side: `MemoryGate` (one process) here, `RedisGate`
(every process shares the cache and the last-send times) in gate_redis.py.

PostgreSQL holds the truth. A backend answers None while it holds no copy of a live; the
service then loads a `Snapshot` and `fill`s it. Every change in PostgreSQL is followed by
`invalidate`, which drops the copy and bumps the live's generation; a `fill` carrying an older
generation (read before the change) is refused, so a stale copy never lands after a change.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Protocol

Outcome = Literal["ok", "none", "ended", "banned", "timeout", "slow"]

MAX_CACHED_LIVES = 10_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A live's chat state as stored: `state` is live, ended or none (never announced)."""

    state: str
    host_id: str | None
    slow_s: int
    bans: frozenset[str] = frozenset()
    timeouts: dict[str, int] = field(default_factory=dict)  # user -> until (epoch ms)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    retry_after: float = 0.0  # seconds (slow, timeout)
    stamp: str | None = None  # the slow-mode mark this send took, to give back on a retry


def new_stamp(now_ms: int) -> str:
    return f"{now_ms}-{secrets.token_hex(4)}"


def stamp_ms(stamp: str) -> int:
    return int(stamp.split("-", 1)[0])


class Gate(Protocol):
    async def admit(self, live_id: str, user_id: str, *, take_slot: bool) -> Verdict | None:
        """Decide, and (take_slot) mark this send for slow mode; None: no copy, fill first."""

    async def admit_many(
        self, live_id: str, user_ids: list[str], *, take_slot: bool
    ) -> list[Verdict] | None:
        """`admit` for a run of sends in one live, decided in order (a user's second send of
        the run sees the slow-mode mark of the first); None: no copy, fill first."""

    async def generation(self, live_id: str) -> int: ...

    async def fill(self, live_id: str, gen: int, snap: Snapshot) -> None:
        """Keep `snap` unless the live changed since `gen` was read."""

    async def invalidate(self, live_id: str) -> None: ...

    async def forget_user(self, user_id: str) -> int:
        """Erasure: drop the user's last-send times; return the Redis keys deleted."""
        ...

    async def give_back(self, live_id: str, user_id: str, stamp: str) -> None:
        """Undo the slow-mode mark `stamp` (the send turned out to be a retry)."""


def decide(snap: Snapshot, user_id: str, now_ms: int) -> Verdict | None:
    """Everything but slow mode; None when the user may send."""
    if user_id in snap.bans:
        return Verdict("banned")
    if snap.state != "live":
        return Verdict("ended" if snap.state == "ended" else "none")
    until = snap.timeouts.get(user_id)
    if until is not None and until > now_ms:
        return Verdict("timeout", (until - now_ms) / 1000)
    return None


class MemoryGate:
    """In-process gate for the embedded default (one process)."""

    def __init__(self) -> None:
        self._copies: OrderedDict[str, Snapshot] = OrderedDict()
        self._gens: dict[str, int] = {}
        self._last: dict[tuple[str, str], str] = {}  # (live, user) -> stamp of the last send
        self._swept = time.monotonic()

    async def admit(self, live_id: str, user_id: str, *, take_slot: bool) -> Verdict | None:
        snap = self._copies.get(live_id)
        if snap is None:
            return None
        self._copies.move_to_end(live_id)
        now_ms = int(time.time() * 1000)
        refused = decide(snap, user_id, now_ms)
        if refused is not None or not take_slot or snap.slow_s <= 0:
            return refused or Verdict("ok")
        key = (live_id, user_id)
        last = self._last.get(key)
        if last is not None and now_ms - stamp_ms(last) < snap.slow_s * 1000:
            return Verdict("slow", (stamp_ms(last) + snap.slow_s * 1000 - now_ms) / 1000)
        stamp = new_stamp(now_ms)
        self._last[key] = stamp
        self._sweep()
        return Verdict("ok", stamp=stamp)

    async def admit_many(
        self, live_id: str, user_ids: list[str], *, take_slot: bool
    ) -> list[Verdict] | None:
        if live_id not in self._copies:
            return None
        verdicts: list[Verdict] = []
        for user_id in user_ids:
            verdict = await self.admit(live_id, user_id, take_slot=take_slot)
            assert verdict is not None  # no await between the check above and here
            verdicts.append(verdict)
        return verdicts

    async def generation(self, live_id: str) -> int:
        return self._gens.get(live_id, 0)

    async def fill(self, live_id: str, gen: int, snap: Snapshot) -> None:
        if self._gens.get(live_id, 0) != gen:
            return
        self._copies[live_id] = snap
        self._copies.move_to_end(live_id)
        while len(self._copies) > MAX_CACHED_LIVES:
            self._copies.popitem(last=False)

    async def invalidate(self, live_id: str) -> None:
        self._gens[live_id] = self._gens.get(live_id, 0) + 1
        self._copies.pop(live_id, None)

    async def forget_user(self, user_id: str) -> int:
        for key in [k for k in self._last if k[1] == user_id]:
            del self._last[key]
        return 0

    async def give_back(self, live_id: str, user_id: str, stamp: str) -> None:
        if self._last.get((live_id, user_id)) == stamp:
            del self._last[(live_id, user_id)]

    def _sweep(self) -> None:
        """Forget last-send times older than the longest slow mode (an hour), once a minute."""
        now = time.monotonic()
        if now - self._swept < 60:
            return
        self._swept = now
        horizon = int(time.time() * 1000) - 3_600_000
        for key in [k for k, s in self._last.items() if stamp_ms(s) < horizon]:
            del self._last[key]
