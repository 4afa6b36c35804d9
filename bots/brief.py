"""The 8 AM daily brief: one durable scheduler job per admin per local date
(`bot.brief:<user>:<YYYY-MM-DD>`, run_at = 08:00 in the admin's IANA zone, in UTC).

- Linking an admin schedules the next 08:00; each run schedules the following day's, so an
  admin has one pending brief job at a time.
- On start every linked admin is planned again: a pending job for today is left to the
  scheduler (which runs what came due while the server was down); without one, today's brief
  is caught up when 08:00 has passed, the admin was linked before it and it was not sent;
  otherwise the next 08:00 is scheduled.
- A brief goes out at most once per admin and date (`bot_briefs_sent`), whatever reruns or
  races the job sees; a run for a date that is already over locally is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bots.links import is_admin
from bots.reports import Reports
from bots.sender import Priority, TelegramSender
from bots.store import BotStore, Link
from server.clock import Clock
from server.scheduler import Scheduler

log = logging.getLogger("ours.bot.brief")

KIND = "bot.brief"
BRIEF_AT = time(8, 0)


class BriefNotDue(Exception):
    """The job ran before 08:00 by the bot's clock (clock skew); the scheduler retries it."""


def job_key(user_id: str, local_date: date) -> str:
    return f"{KIND}:{user_id}:{local_date.isoformat()}"


def run_at(tz: str, local_date: date) -> datetime:
    """08:00 on `local_date` in `tz`, as UTC."""
    return datetime.combine(local_date, BRIEF_AT, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def local_today(tz: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def next_date(tz: str, now: datetime) -> date:
    """The local date of the next 08:00 still to come (today's if it is not yet 08:00)."""
    today = local_today(tz, now)
    return today if now < run_at(tz, today) else today + timedelta(days=1)


@dataclass(eq=False)
class Briefs:
    store: BotStore
    scheduler: Scheduler
    sender: TelegramSender
    reports: Reports
    clock: Clock

    async def ensure(self, link: Link, local_date: date) -> None:
        """Have the job for this admin and date, at 08:00 in the admin's current zone."""
        key = job_key(link.user_id, local_date)
        when = run_at(link.tz, local_date)
        payload = {"user_id": link.user_id, "date": local_date.isoformat()}
        job = await self.scheduler.get(key)
        if job is None:
            await self.scheduler.schedule(KIND, key, when, payload)
        elif job["state"] in ("pending", "cancelled") and job["run_at"] != when:
            # the admin changed time zone; a run that slips through twice is still sent once
            await self.scheduler.schedule(KIND, key, when, payload, replace=True)

    async def plan(self, link: Link, *, catch_up: bool) -> None:
        """Give an admin their next brief job; with `catch_up`, today's missed one first.

        An admin has one pending brief job at a time (each run schedules the next), so a job
        for today still pending (due, or later today) is left to the scheduler."""
        if not is_admin(link):
            return
        now = self.clock.now()
        today = local_today(link.tz, now)
        due_today = run_at(link.tz, today)
        today_job = await self.scheduler.get(job_key(link.user_id, today))
        if today_job is not None and today_job["state"] in ("pending", "running"):
            if today_job["state"] == "pending":
                await self.ensure(link, today)  # follows a time zone change
            return
        if (
            catch_up
            and today_job is None
            and now >= due_today
            and link.linked_at < due_today
            and today not in await self.store.briefs_sent(link.user_id)
        ):
            log.info("catching up a missed brief", extra={"user_id": link.user_id})
            await self.ensure(link, today)
            return
        await self.ensure(link, next_date(link.tz, now))

    async def plan_all(self) -> None:
        for link in await self.store.admin_links():
            await self.plan(link, catch_up=True)

    async def run_job(self, payload: dict[str, Any]) -> None:
        """The scheduler's handler for `bot.brief` jobs."""
        user_id = str(payload["user_id"])
        local_date = date.fromisoformat(str(payload["date"]))
        link = await self.store.link_by_user(user_id)
        if link is None or not is_admin(link):
            return  # unlinked (or no longer an admin): the chain ends here
        now = self.clock.now()
        if now < run_at(link.tz, local_date) - timedelta(seconds=1):
            raise BriefNotDue(f"brief for {local_date} is due at {run_at(link.tz, local_date)}")
        today = local_today(link.tz, now)
        await self.ensure(link, max(local_date + timedelta(days=1), next_date(link.tz, now)))
        if local_date < today:
            log.info("skipping a stale brief", extra={"user_id": user_id, "date": str(local_date)})
            return
        await self.send(link, local_date)

    async def send(self, link: Link, local_date: date) -> bool:
        """Send the brief for `local_date` unless it went out already; True if sent now."""
        if link.blocked or not await self.store.claim_brief(link.user_id, local_date, link.chat_id):
            return False
        try:
            text = await self.reports.brief(link.tz, self.clock.now())
            result = await self.sender.send(link.chat_id, text, priority=Priority.BRIEF)
        except BaseException:
            await self.store.release_brief(link.user_id, local_date)
            raise
        if result.status == "failed":
            await self.store.release_brief(link.user_id, local_date)
            raise RuntimeError(f"brief not delivered: {result.error}")
        return result.ok
