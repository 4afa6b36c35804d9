"""Activity streams (seed 000): opt-in sharing of what a user is doing, kept 24 hours; the ack
says how many others share the same thing today, and opted-in people who share it get a
`match` notification through the router (its daily cap of 3 applies there, in one place).

"Today" is the retention window: the last 24 hours. An entry is invisible the moment it
expires and deleted by the next `activity.purge` run (every few minutes, a durable job)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from activity.similarity import label, similarity_key
from activity.store import ActivityStore
from server.clock import utcnow
from server.errors import ApiError, Code
from server.scheduler import Scheduler

log = logging.getLogger("ours.activity")

RETENTION = timedelta(hours=24)
MAX_LIVE_ENTRIES = 100  # per user in the window
MAX_MATCHES_PER_SHARE = 10  # seed 000: "only notify first 10 matches"
NOTIFY_JOB = "activity.notify"
PURGE_JOB = "activity.purge"

TITLES = {
    "listening": "Someone's listening too",
    "watching": "Someone's watching too",
    "reading": "Someone's reading too",
    "playing": "Someone's playing too",
    "eating": "Someone's eating the same",
    "doing": "Someone's doing the same thing",
}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


class Notifications(Protocol):
    """What activity needs of the notification router (routing/feature.py implements it)."""

    async def notify(
        self,
        user_ids: list[str],
        kind: str,
        payload: dict[str, Any],
        *,
        actor: str | None = None,
        key: str | None = None,
        group: str | None = None,
    ) -> str: ...

    async def kind_enabled(self, user_id: str, kind: str) -> bool: ...

    async def set_kind_enabled(self, user_id: str, kind: str, on: bool) -> None: ...


class Activity:
    def __init__(
        self,
        store: ActivityStore,
        scheduler: Scheduler,
        now: Callable[[], datetime],
        notifications: Notifications,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.now = now
        self.notifications = notifications
        self.purge_every = timedelta(minutes=5)

    # -- consent ----------------------------------------------------------------------------

    async def set_optin(self, user_id: str, enabled: bool, matches: bool | None) -> dict[str, Any]:
        """Opt in or out. Opting out deletes every entry at once. `matches` (default: the
        same as `enabled`) switches `match` notifications in the user's preferences."""
        removed = 0
        if enabled:
            await self.store.opt_in(user_id, self.now())
        else:
            removed = await self.store.opt_out(user_id)
        wanted = enabled if matches is None else matches
        if await self._match_notifications(user_id) != wanted:
            await self._set_match_notifications(user_id, wanted)
        return {"enabled": enabled, "matches": wanted, "removed": removed}

    async def _set_match_notifications(self, user_id: str, on: bool) -> None:
        await self.notifications.set_kind_enabled(user_id, "match", on)

    async def _match_notifications(self, user_id: str) -> bool:
        return await self.notifications.kind_enabled(user_id, "match")

    async def status(self, user_id: str) -> dict[str, Any]:
        now = self.now()
        row = await self.store.optin_row(user_id)
        entries = []
        for e in await self.store.entries_of(user_id, now):
            others = await self.store.others_sharing(e["hash"], user_id, now)
            entries.append({**self.wire(e), "similar": others, "label": label(others)})
        return {
            "enabled": row is not None,
            "opted_in_at": _iso(row["opted_in_at"]) if row else None,
            "matches": await self._match_notifications(user_id),
            "entries": entries,
        }

    # -- sharing ----------------------------------------------------------------------------

    async def share(self, user_id: str, kind: str, text: str) -> dict[str, Any]:
        try:
            key = similarity_key(text, kind)
        except ValueError:
            raise ApiError(Code.BAD_REQUEST, "say what you are doing in words") from None
        now = self.now()
        async with self.store.transaction() as conn:
            if not await self.store.lock_user(conn, user_id):
                raise ApiError(
                    Code.FORBIDDEN,
                    "activity streams are opt-in: send activity:optin {enabled: true} first",
                )
            count, oldest = await self.store.live_count(conn, user_id, now)
            if count >= MAX_LIVE_ENTRIES:
                wait = max(1.0, ((oldest or now) - now).total_seconds())
                raise ApiError(
                    Code.RATE_LIMITED,
                    f"at most {MAX_LIVE_ENTRIES} activities in 24 hours",
                    {"retry_after": round(wait, 3)},
                )
            row = await self.store.insert_entry(
                conn, user_id, kind, text, key, now, now + RETENTION
            )
            others = await self.store.others_sharing(key, user_id, now, conn)
            entry_id = str(row["id"])
            # durable and after the ack: the job finds the people to tell (real time, not the
            # feature clock: the scheduler compares run_at with the database's now())
            await self.scheduler.schedule(
                NOTIFY_JOB,
                f"{NOTIFY_JOB}:{entry_id}",
                utcnow(),
                {"entry_id": entry_id},
                conn=conn,
            )
        return {**self.wire(row), "similar": others, "label": label(others)}

    async def delete(self, user_id: str, entry_id: str) -> dict[str, Any]:
        if not await self.store.delete_entry(user_id, entry_id):
            raise ApiError(Code.NOT_FOUND, "no such activity of yours")
        return {"id": entry_id, "deleted": True}

    @staticmethod
    def wire(row: Any) -> dict[str, Any]:
        return {
            "id": str(row["id"]),
            "kind": row["kind"],
            "text": row["text"],
            "created_at": _iso(row["created_at"]),
            "expires_at": _iso(row["expires_at"]),
        }

    # -- jobs -------------------------------------------------------------------------------

    async def notify_matches(self, payload: dict[str, Any]) -> None:
        """Job: tell the opted-in people who share the same thing (at most 10 per share; the
        router drops what is over a recipient's 3 a day). Anonymous: no actor, and each
        recipient's notification quotes their own words."""
        row = await self.store.entry(payload["entry_id"])
        now = self.now()
        if row is None or row["expires_at"] <= now:
            return
        recipients = await self.store.match_recipients(
            row["hash"], row["user_id"], now, MAX_MATCHES_PER_SHARE
        )
        for r in recipients:
            await self.notifications.notify(
                [r["user_id"]],
                "match",
                {
                    "title": TITLES.get(row["kind"], TITLES["doing"]),
                    "text": f'Another person shares what you shared: "{r["text"][:80]}"',
                    "kind": row["kind"],
                },
                key=f"activity:{row['id']}:{r['user_id']}",
            )
        if recipients:
            log.info("activity matches sent", extra={"recipients": len(recipients)})

    async def purge(self) -> int:
        """Delete every expired entry now; also tidy this feature's finished jobs."""
        removed = await self.store.purge(self.now())
        await self.store.drop_finished_jobs([NOTIFY_JOB, PURGE_JOB])
        if removed:
            log.info("expired activities deleted", extra={"removed": removed})
        return removed

    async def purge_job(self, payload: dict[str, Any]) -> None:
        await self.purge()
        slot = payload.get("at")
        await self.schedule_purge(after=datetime.fromisoformat(slot) if slot else None)

    async def schedule_purge(self, after: datetime | None = None) -> None:
        """The next run on the `purge_every` grid (after the slot that just ran, so clock skew
        never schedules the same slot twice); the key makes every process schedule the same
        job, and each run schedules the next."""
        step = self.purge_every.total_seconds()
        now = utcnow().timestamp()
        if after is not None:
            now = max(now, after.timestamp())
        run_at = datetime.fromtimestamp((now // step + 1) * step, UTC)
        await self.scheduler.schedule(
            PURGE_JOB, f"{PURGE_JOB}:{run_at.isoformat()}", run_at, {"at": run_at.isoformat()}
        )

    # -- a user's data ----------------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        row = await self.store.optin_row(user_id)
        return {
            "opted_in_at": _iso(row["opted_in_at"]) if row else None,
            "entries": [self.wire(e) for e in await self.store.entries_of(user_id, None)],
        }
