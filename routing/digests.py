"""Daily and weekly digest emails, sent by Resend at the user's local digest time.

A digest job (`routing.digest`, a durable scheduler job keyed by user and due time) is created
when a notification arrives for a user whose digest is on; so users with nothing new get no
job and no email. The job sends what is new since the previous digest, then records it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from routing.channels.base import Message, PermanentError, Skip
from routing.channels.email import EmailChannel
from routing.priorities import Priority
from routing.store.digests import DigestStore
from routing.store.preferences import PreferenceStore

log = logging.getLogger("ours.router.digest")

PERIOD = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
MAX_ITEMS = 50


@dataclass(eq=False)
class Digests:
    prefs: PreferenceStore
    store: DigestStore
    email: EmailChannel
    now: Callable[[], datetime]

    async def run(self, payload: dict[str, Any]) -> None:
        """Scheduler job handler; returns quietly when there is nothing to send."""
        user = str(payload["user_id"])
        await self.send(user, str(payload["mode"]), datetime.fromisoformat(payload["due"]))

    async def send(self, user: str, mode: str, due: datetime) -> bool:
        """Send the user's digest due at `due`; True when an email went out."""
        prefs = await self.prefs.get(user)
        current = prefs.effective_digest()
        if current == "off" or current != mode:
            return False  # the user changed it; a later notification schedules the new one
        now = self.now()
        last = await self.store.last_sent(user)
        since = max(last, due - PERIOD[mode]) if last else due - PERIOD[mode]
        items, total = await self.store.items(user, since, now, MAX_ITEMS)
        if not items:
            return False
        # the digest has its own switch (digest: off); the email channel switch is for the
        # per-notification emails
        if not prefs.email or self.email.unavailable():
            log.info("digest not sent: no email channel", extra={"user_id": user})
            return False
        heading = "Your daily OURS digest" if mode == "daily" else "Your week on OURS"
        msg = Message(
            user_id=user,
            priority=Priority.BATCH,
            title=heading,
            body="",
            items=items,
            key=f"digest-{user}-{due.isoformat()}",
            heading=heading,
            data={"kind": "digest", "total": str(total)},
        )
        try:
            await self.email.send(msg, prefs)  # TransientError -> the scheduler retries
        except (Skip, PermanentError) as exc:
            log.warning("digest refused", extra={"user_id": user, "error": str(exc)})
            return False
        await self.store.record(user, mode, now)
        return True
