"""The router: turns an event into notifications for its recipients and plans their deliveries.

    event -> recipients (user:* subjects + the payload's recipient fields, never the actor)
          -> per recipient: type switch, daily cap, aggregation into an open inbox item
          -> one delivery-log row per channel: in-app now; push/SMS/Telegram now or held until
             quiet hours end; email into the user's hourly batch; or skipped with the reason
          -> commit, then tell the user's sockets and wake the dispatcher

Idempotent on (event, recipient): a redelivered event finds its rows and adds nothing; in-app
rows still `queued` (a crash between commit and emit) are emitted on the redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg

from routing import metrics, render
from routing.channels.base import OutboundChannel
from routing.channels.in_app import InAppChannel
from routing.preferences import Preferences
from routing.priorities import (
    CHANNELS_FOR,
    EVENTS,
    EXTERNAL,
    KINDS,
    Channel,
    Priority,
    actor_of,
    in_app_only_of,
    recipients_of,
)
from routing.quiet_hours import next_digest_at, quiet_until
from routing.store import RouterStore
from routing.store.digests import DIGEST_JOB
from routing.store.inbox import NewNotification, item
from routing.store.outbox import DeliveryRow
from server.events import Event

if TYPE_CHECKING:
    from routing.dispatch import Dispatcher

log = logging.getLogger("ours.router")

CHUNK = 500
EMIT_BATCH = 100
MAX_ACTORS = 10


@dataclass(frozen=True, slots=True)
class RouterOptions:
    aggregate_window: timedelta = timedelta(hours=1)
    email_window: timedelta = timedelta(hours=1)  # at most one email per user per window
    email_gather: timedelta = timedelta(minutes=15)  # how long a new email batch collects


@dataclass(eq=False)
class Router:
    store: RouterStore
    in_app: InAppChannel
    channels: dict[Channel, OutboundChannel]
    dispatcher: Dispatcher
    now: Callable[[], datetime]
    options: RouterOptions

    # -- entry points -----------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """Bus consumer (group "router")."""
        rule = EVENTS.get(event.type)
        if rule is None:
            return
        actor = actor_of(rule, event.payload, event.actor)
        users = recipients_of(rule, event.payload, event.subjects, actor)
        if not users:
            return
        group = event.payload.get(rule.group) if rule.group else None
        quiet = in_app_only_of(rule, event.payload)
        # who is kept in-app (who muted, say) is not for the other recipients' inboxes
        hidden = {f for f, _, _ in rule.in_app_only}
        payload = {k: v for k, v in event.payload.items() if k not in hidden}
        await self.route(event.id, rule.kind, users, actor, payload, group, quiet)

    async def notify(
        self,
        user_ids: list[str],
        kind: str,
        payload: dict[str, Any],
        *,
        actor: str | None = None,
        key: str | None = None,
        group: str | None = None,
    ) -> str:
        """Service call for features without a bus event (e.g. `match` from the activity
        feature). `key` makes it idempotent; returns the id used in the delivery log."""
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}")
        if key:
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ours:router:{kind}:{key}"))
        else:
            event_id = str(uuid.uuid4())
        users = [u for u in dict.fromkeys(user_ids) if u and u != actor]
        await self.route(event_id, kind, users, actor, payload, group)
        return event_id

    # -- routing ----------------------------------------------------------------------------

    async def route(
        self,
        event_id: str,
        kind_name: str,
        users: list[str],
        actor: str | None,
        payload: dict[str, Any],
        group: Any,
        in_app_only: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """`in_app_only`: recipients told in-app only, with the reason (e.g. muted)."""
        for start in range(0, len(users), CHUNK):
            chunk = users[start : start + CHUNK]
            now = self.now()
            async with self.store.transaction() as conn:
                new = await self.store.inbox.claim_event(conn, event_id, chunk, kind_name, now)
                if new:
                    prefs = await self.store.prefs.load(new, conn)
                    await self._add(
                        conn, event_id, kind_name, new, prefs, actor, payload, group, in_app_only
                    )
            await self._tell_sockets(event_id, chunk)
        self.dispatcher.wake()

    async def _add(
        self,
        conn: asyncpg.Connection,
        event_id: str,
        kind_name: str,
        users: list[str],
        prefs: dict[str, Preferences],
        actor: str | None,
        payload: dict[str, Any],
        group: Any,
        in_app_only: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        kind = KINDS[kind_name]
        now = self.now()
        if kind.aggregate or kind.daily_cap is not None:
            await self.store.inbox.lock_users(conn, users)
        actors = [actor] if actor else []
        title, body = render.texts(kind_name, payload, actors, len(actors))
        data = {"event_id": event_id, **payload}
        group_key = f"{kind_name}:{group or ''}" if kind.aggregate else None
        filtered: dict[str, tuple[str, str]] = {}
        notification_of: dict[str, int] = {}
        inserts: list[NewNotification] = []
        for user in users:
            p = prefs[user]
            why = await self._filtered(conn, user, kind_name, p, now)
            if why is not None:
                filtered[user] = why
            elif group_key is not None:
                grown = await self._grow(conn, user, group_key, kind_name, payload, actor, now)
                if grown is not None:
                    notification_of[user] = grown
                    continue
            inserts.append(
                NewNotification(
                    user,
                    kind_name,
                    kind.priority.value,
                    title,
                    body,
                    data,
                    actor,
                    group_key if why is None else None,
                    hidden=why is not None,
                )
            )
        for row in await self.store.inbox.insert(conn, inserts, now):
            notification_of[row["user_id"]] = row["id"]
        counted = kind.daily_cap is not None
        await self.store.inbox.link_events(
            conn,
            event_id,
            [(u, notification_of[u], counted and u not in filtered) for u in users],
        )
        rows = await self._plan(
            conn, users, notification_of, filtered, kind_name, prefs, now, in_app_only or {}
        )
        await self.store.outbox.insert(conn, event_id, rows, now)
        await self.store.digests.ensure_jobs(conn, self._digest_jobs(users, filtered, prefs, now))
        for user in users:
            metrics.NOTIFICATIONS.labels(
                kind_name, "filtered" if user in filtered else "added"
            ).inc()

    async def _filtered(
        self, conn: asyncpg.Connection, user: str, kind_name: str, p: Preferences, now: datetime
    ) -> tuple[str, str] | None:
        """Why this notification is dropped for this user (type off, daily cap), or None."""
        if not p.type_on(kind_name):
            return "preference", f"{kind_name} notifications are switched off"
        cap = KINDS[kind_name].daily_cap
        if cap is not None:
            seen = await self.store.inbox.count_since(
                conn, user, kind_name, now - timedelta(days=1)
            )
            if seen >= cap:
                return "cap", f"at most {cap} {kind_name} notifications a day"
        return None

    async def _grow(
        self,
        conn: asyncpg.Connection,
        user: str,
        group_key: str,
        kind_name: str,
        payload: dict[str, Any],
        actor: str | None,
        now: datetime,
    ) -> int | None:
        """Collapse into the user's open notification of this group; its id, or None."""
        open_row = await self.store.inbox.open_group(
            conn, user, group_key, now - self.options.aggregate_window
        )
        if open_row is None:
            return None
        known = list(open_row["actors"])
        count = open_row["actor_count"]
        if actor is not None:
            if actor not in known:
                count += 1
            known = [actor, *[a for a in known if a != actor]][:MAX_ACTORS]
        title, body = render.texts(kind_name, payload, known, count)
        grown = await self.store.inbox.grow_group(
            conn, open_row["id"], known, count, title, body, now
        )
        return int(grown["id"])

    # -- delivery planning ------------------------------------------------------------------

    async def _plan(
        self,
        conn: asyncpg.Connection,
        users: list[str],
        notification_of: dict[str, int],
        filtered: dict[str, tuple[str, str]],
        kind_name: str,
        prefs: dict[str, Preferences],
        now: datetime,
        in_app_only: dict[str, tuple[str, str]],
    ) -> list[DeliveryRow]:
        priority = KINDS[kind_name].priority
        rows: list[DeliveryRow] = []
        emailed: list[str] = []
        for user in users:
            nid, p = notification_of[user], prefs[user]
            if user in filtered:
                reason, detail = filtered[user]
                for ch in Channel:
                    rows.append(DeliveryRow(user, ch, nid, priority, "skipped", reason, detail))
                continue
            rows.append(DeliveryRow(user, Channel.IN_APP, nid, priority, "queued"))
            quiet = quiet_until(p, now)
            for ch in EXTERNAL:
                planned = partial(DeliveryRow, user, ch, nid, priority)
                skip = in_app_only.get(user) or self._skip(ch, p, kind_name, priority)
                if skip is not None:
                    rows.append(planned("skipped", *skip))
                elif ch is Channel.EMAIL:
                    emailed.append(user)
                    why = "waits for the user's hourly email"
                    rows.append(planned("queued", "batched", why, batch_key="email"))
                elif quiet is not None and not (
                    priority is Priority.IMMEDIATE and p.critical_breaks_quiet
                ):
                    until = quiet.isoformat()
                    why = f"held until quiet hours end ({until})"
                    rows.append(planned("queued", "quiet_hours", why, f"quiet:{until}", quiet))
                else:
                    rows.append(planned("queued", not_before=now))
        if emailed:
            timing = await self.store.outbox.email_timing(conn, emailed)
            for row in rows:
                if row.channel is Channel.EMAIL and row.state == "queued":
                    row.not_before = self._email_due(now, *timing[row.user_id])
        return rows

    def _skip(
        self, ch: Channel, p: Preferences, kind_name: str, priority: Priority
    ) -> tuple[str, str] | None:
        """Why this channel is not used for this notification, or None to use it."""
        if ch not in CHANNELS_FOR[priority]:
            where = "the digest" if priority is Priority.BATCH else "the in-app inbox"
            return "priority", f"{priority} notifications do not use {ch} (they go to {where})"
        refused = p.refuses(ch, kind_name)
        if refused is not None:
            return "preference", refused
        why = self.channels[ch].unavailable()
        if why is not None:
            return "not_configured", why
        if ch is Channel.EMAIL and not p.email:
            return "no_address", "no email address"
        if ch is Channel.SMS:
            if not p.phone:
                return "no_phone", "no phone number"
            if not p.phone_verified:
                return "unverified_number", "the phone number is not verified"
        return None

    def _email_due(
        self, now: datetime, pending: datetime | None, last_sent: datetime | None
    ) -> datetime:
        """Join the batch that is waiting, or open one: it collects for `email_gather` and
        leaves no sooner than `email_window` after the last email."""
        if pending is not None:
            return pending
        due = now + self.options.email_gather
        if last_sent is not None:
            due = max(due, last_sent + self.options.email_window)
        return due

    def _digest_jobs(
        self,
        users: list[str],
        filtered: dict[str, tuple[str, str]],
        prefs: dict[str, Preferences],
        now: datetime,
    ) -> list[tuple[str, datetime, dict[str, Any]]]:
        jobs = []
        for user in users:
            mode = prefs[user].effective_digest()
            if user in filtered or mode == "off":
                continue
            at = next_digest_at(prefs[user], now, mode)
            payload = {"user_id": user, "mode": mode, "due": at.isoformat()}
            jobs.append((f"{DIGEST_JOB}:{user}:{at.isoformat()}", at, payload))
        return jobs

    # -- sockets ----------------------------------------------------------------------------

    async def _tell_sockets(self, event_id: str, users: list[str]) -> None:
        taken = await self.store.outbox.take_in_app(event_id, users, self.now())
        emits = []
        for user, row, unread in taken:
            payload = item(row)
            tell = self.in_app.updated if row["event_count"] > 1 else self.in_app.new
            emits.append(tell(user, payload, unread))
        # one room per user: independent emits, sent concurrently (with Redis each is a round
        # trip)
        for start in range(0, len(emits), EMIT_BATCH):
            await asyncio.gather(*emits[start : start + EMIT_BATCH])
        if taken:
            metrics.DELIVERIES.labels("in_app", "delivered", "").inc(len(taken))
