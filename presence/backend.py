"""Presence: who is online. A user is online while any device (a /presence socket) is alive:
connected sockets are refreshed by their node, clients heart-beat every 30 s, and a device
whose node stopped refreshing it (a crash) expires after `ttl` (two missed heartbeats).

State transitions are announced once: a quick reconnect within `grace` shows no offline flap,
and an invisible user is shown offline to others. Backends side by side: `MemoryPresence`
(here, embedded default) and `RedisPresence` (presence/backend_redis.py, cluster-wide).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import Field

from server.contract import Outgoing


class PresenceStatus(Outgoing):
    """A user's presence as others see it (`Status.wire`; an invisible user is offline)."""

    user_id: str
    status: Literal["online", "offline"]
    last_seen: float | None = Field(
        description="unix seconds of the last sign of life; null if never seen or invisible"
    )


@dataclass(frozen=True, slots=True)
class Status:
    user_id: str
    online: bool
    last_seen: float | None  # unix seconds; None if never seen

    def wire(self) -> dict[str, object]:
        """As clients see it (`PresenceStatus`)."""
        return {
            "user_id": self.user_id,
            "status": "online" if self.online else "offline",
            "last_seen": self.last_seen,
        }


class PresenceStore(Protocol):
    async def touch(self, user_id: str, device: str, ttl: float) -> bool:
        """Add or refresh a device; True when this makes the user online (to announce)."""

    async def leave(self, user_id: str, device: str) -> None:
        """A device left cleanly; `settle` decides after the grace period."""

    async def settle(self, user_id: str) -> bool:
        """True when the user has no live device and was announced online (to announce)."""

    async def expire(self) -> list[str]:
        """Drop devices past their expiry; return users who went offline (to announce)."""

    async def statuses(self, user_ids: list[str]) -> list[Status]: ...

    async def set_invisible(self, user_id: str, invisible: bool) -> None: ...

    async def invisible(self, user_id: str) -> bool: ...

    async def forget(self, user_id: str) -> int:
        """Erasure: drop everything about the user; return the Redis entries removed."""
        ...


class MemoryPresence:
    def __init__(self) -> None:
        self._devices: dict[str, dict[str, float]] = {}
        self._announced: dict[str, bool] = {}
        self._last_seen: dict[str, float] = {}
        self._invisible: set[str] = set()

    def _live(self, user_id: str, now: float) -> dict[str, float]:
        devices = self._devices.get(user_id, {})
        for dev in [d for d, exp in devices.items() if exp <= now]:
            del devices[dev]
        return devices

    async def touch(self, user_id: str, device: str, ttl: float) -> bool:
        now = time.time()
        self._live(user_id, now)
        self._devices.setdefault(user_id, {})[device] = now + ttl
        self._last_seen[user_id] = now
        if not self._announced.get(user_id):
            self._announced[user_id] = True
            return True
        return False

    async def leave(self, user_id: str, device: str) -> None:
        self._devices.get(user_id, {}).pop(device, None)
        self._last_seen[user_id] = time.time()

    async def settle(self, user_id: str) -> bool:
        if self._live(user_id, time.time()) or not self._announced.get(user_id):
            return False
        self._announced[user_id] = False
        self._devices.pop(user_id, None)
        return True

    async def expire(self) -> list[str]:
        now = time.time()
        gone = []
        for user_id in list(self._devices):
            if not self._live(user_id, now) and self._announced.get(user_id):
                self._announced[user_id] = False
                del self._devices[user_id]
                gone.append(user_id)
        return gone

    async def statuses(self, user_ids: list[str]) -> list[Status]:
        now = time.time()
        return [
            Status(
                u,
                bool(self._live(u, now)) and u not in self._invisible,
                None if u in self._invisible else self._last_seen.get(u),
            )
            for u in user_ids
        ]

    async def set_invisible(self, user_id: str, invisible: bool) -> None:
        if invisible:
            self._invisible.add(user_id)
        else:
            self._invisible.discard(user_id)

    async def invisible(self, user_id: str) -> bool:
        return user_id in self._invisible

    async def forget(self, user_id: str) -> int:
        for d in (self._devices, self._announced, self._last_seen):
            d.pop(user_id, None)
        self._invisible.discard(user_id)
        return 0
