"""The router: turns events into notifications for their recipients and plans their deliveries.

    events -> recipients (user:* subjects + the payload's recipient fields + the members of the
              event's audience, never the actor)
           -> per recipient: type switch, daily cap, aggregation into an open inbox item
           -> one delivery-log row per channel it uses: in-app now; push/SMS/Telegram now or
              held until quiet hours end; email into the user's hourly batch; what is skipped
              (with the reason) in one compact row per event and way of skipping
           -> commit, then tell the users' sockets and wake the dispatcher

In batches: what the bus has queued for the router is taken together (`handle_many`), and the
(event, recipient) pairs are planned in chunks of CHUNK, each one transaction with one
statement per concern (claims, preferences, caps, open groups, inbox rows, delivery rows, skip
rows, digest jobs), then one statement to mark the chunk's in-app rows delivered and one call
that emits every user room of the chunk.

Idempotent on (event, recipient): a redelivered event finds its rows and adds nothing; in-app
rows still `queued` (a crash between commit and emit) are emitted on the redelivery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
from routing.store.inbox import Grow, NewNotification, item
from routing.store.outbox import DeliveryRow, SkipGroup
from server.events import Event

if TYPE_CHECKING:
    from routing.dispatch import Dispatcher

log = logging.getLogger("ours.router")

CHUNK = 2000  # (event, recipient) pairs planned in one transaction
EMIT_BATCH = 500  # user-room emits handed to the fan-out in one call
AUDIENCE_PAGE = 5000  # audience members read at a time
MAX_ACTORS = 10


@dataclass(frozen=True, slots=True)
class RouterOptions:
    aggregate_window: timedelta = timedelta(hours=1)
    email_window: timedelta = timedelta(hours=1)  # at most one email per user per window
    email_gather: timedelta = timedelta(minutes=15)  # how long a new email batch collects


@dataclass(eq=False, slots=True)
class Routing:
    """One event's notification before its recipients: what every recipient gets."""

    event_id: str
    kind: str
    users: list[str]
    actor: str | None
    payload: dict[str, Any]
    group: Any = None
    #: recipients told in-app only, with the reason (e.g. muted)
    in_app_only: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: an audience whose members are recipients too (expanded page by page)
    audience: str | None = None

    @property
    def group_key(self) -> str | None:
        return f"{self.kind}:{self.group or ''}" if KINDS[self.kind].aggregate else None


Pair = tuple[Routing, str]  # (the event's routing, a recipient)


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
        await self.handle_many([event])

    async def handle_many(self, events: list[Event]) -> None:
        """Bus consumer for what is queued (group "router"): every event's recipients planned
        together, in chunks."""
        await self.route_all([r for r in map(self.routing_of, events) if r is not None])

    def routing_of(self, event: Event) -> Routing | None:
        rule = EVENTS.get(event.type)
        if rule is None:
            return None
        actor = actor_of(rule, event.payload, event.actor)
        users = recipients_of(rule, event.payload, event.subjects, actor)
        if not users and event.audience is None:
            return None
        group = event.payload.get(rule.group) if rule.group else None
        quiet = in_app_only_of(rule, event.payload)
        # who is kept in-app (who muted, say) is not for the other recipients' inboxes
        hidden = {f for f, _, _ in rule.in_app_only}
        payload = {k: v for k, v in event.payload.items() if k not in hidden}
        return Routing(event.id, rule.kind, users, actor, payload, group, quiet, event.audience)

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
        await self.route_all(
            [Routing(event_id, kind_name, users, actor, payload, group, in_app_only or {})]
        )

    async def route_all(self, routings: list[Routing]) -> None:
        """Plan every (event, recipient) pair in chunks of CHUNK. A chunk never holds one
        user's aggregation group twice (the second event grows what the first made, so it goes
        into the next chunk)."""
        chunk: list[Pair] = []
        groups: set[tuple[str, str]] = set()
        for routing in routings:
            key = routing.group_key
            async for users in self._recipients(routing):
                for user in users:
                    if len(chunk) >= CHUNK or (key is not None and (user, key) in groups):
                        await self._route_chunk(chunk)
                        chunk, groups = [], set()
                    chunk.append((routing, user))
                    if key is not None:
                        groups.add((user, key))
        if chunk:
            await self._route_chunk(chunk)

    async def _recipients(self, routing: Routing) -> AsyncIterator[list[str]]:
        """The routing's recipients: its listed users, then its audience page by page (never
        the actor, nobody twice)."""
        listed = set(routing.users)
        if routing.users:
            yield routing.users
        if routing.audience is None:
            return
        after = ""
        while True:
            page = await self.store.audiences.page(routing.audience, after, AUDIENCE_PAGE)
            if not page:
                return
            after = page[-1]
            yield [u for u in page if u != routing.actor and u not in listed]

    async def _route_chunk(self, pairs: list[Pair]) -> None:
        now = self.now()
        async with self.store.transaction() as conn:
            new = await self.store.inbox.claim(
                conn, [(r.event_id, u, r.kind) for r, u in pairs], now
            )
            fresh = [(r, u) for r, u in pairs if (r.event_id, u) in new]
            if fresh:
                await self._add(conn, fresh, now)
        await self._tell_sockets([(r.event_id, u) for r, u in pairs])
        self.dispatcher.wake()

    async def _add(self, conn: asyncpg.Connection, pairs: list[Pair], now: datetime) -> None:
        users = list(dict.fromkeys(u for _, u in pairs))
        prefs = await self.store.prefs.load(users, conn)
        kinds = {r.kind: KINDS[r.kind] for r, _ in pairs}
        if any(k.aggregate or k.daily_cap is not None for k in kinds.values()):
            await self.store.inbox.lock_users(
                conn,
                {u for r, u in pairs if kinds[r.kind].aggregate or kinds[r.kind].daily_cap},
            )
        filtered = await self._filtered(conn, pairs, prefs, now)
        wanted = [(u, r.group_key) for r, u in pairs if r.group_key and (r, u) not in filtered]
        open_rows = await self.store.inbox.open_groups(
            conn, [(u, k) for u, k in wanted if k], now - self.options.aggregate_window
        )
        notification_of: dict[tuple[str, str], int] = {}
        grows: list[Grow] = []
        inserts: list[NewNotification] = []
        inserted: list[Pair] = []
        texts: dict[str, tuple[str, str]] = {}
        for r, u in pairs:
            why = filtered.get((r, u))
            key = r.group_key
            open_row = open_rows.get((u, key)) if key is not None and why is None else None
            if open_row is not None:
                grows.append(self._grow(open_row, r))
                notification_of[(r.event_id, u)] = int(open_row["id"])
                continue
            if r.event_id not in texts:
                actors = [r.actor] if r.actor else []
                texts[r.event_id] = render.texts(r.kind, r.payload, actors, len(actors))
            title, body = texts[r.event_id]
            inserts.append(
                NewNotification(
                    u,
                    r.kind,
                    kinds[r.kind].priority.value,
                    title,
                    body,
                    {"event_id": r.event_id, **r.payload},
                    r.actor,
                    key if why is None else None,
                    hidden=why is not None,
                )
            )
            inserted.append((r, u))
        await self.store.inbox.grow_groups(conn, grows, now)
        ids = await self.store.inbox.insert(conn, inserts, now)
        for (r, u), nid in zip(inserted, ids, strict=True):
            notification_of[(r.event_id, u)] = nid
        await self.store.inbox.link_events(
            conn,
            [
                (
                    r.event_id,
                    u,
                    notification_of[(r.event_id, u)],
                    kinds[r.kind].daily_cap is not None and (r, u) not in filtered,
                )
                for r, u in pairs
            ],
        )
        rows, skips = await self._plan(conn, pairs, notification_of, filtered, prefs, now)
        await self.store.outbox.insert(conn, rows, now)
        await self.store.outbox.insert_skips(conn, skips, now)
        await self.store.digests.ensure_jobs(conn, self._digest_jobs(pairs, filtered, prefs, now))
        for r, u in pairs:
            outcome = "filtered" if (r, u) in filtered else "added"
            metrics.NOTIFICATIONS.labels(r.kind, outcome).inc()

    async def _filtered(
        self,
        conn: asyncpg.Connection,
        pairs: list[Pair],
        prefs: dict[str, Preferences],
        now: datetime,
    ) -> dict[Pair, tuple[str, str]]:
        """Why a notification is dropped for a recipient (type off, daily cap): the pairs
        dropped, each with its reason. One query counts every capped (user, kind)."""
        out: dict[Pair, tuple[str, str]] = {}
        capped: list[Pair] = []
        for r, u in pairs:
            if not prefs[u].type_on(r.kind):
                out[(r, u)] = ("preference", f"{r.kind} notifications are switched off")
            elif KINDS[r.kind].daily_cap is not None:
                capped.append((r, u))
        if capped:
            seen = await self.store.inbox.counts_since(
                conn, [(u, r.kind) for r, u in capped], now - timedelta(days=1)
            )
            for r, u in capped:  # in order: earlier events of this batch count too
                cap = KINDS[r.kind].daily_cap
                assert cap is not None
                if seen.get((u, r.kind), 0) >= cap:
                    out[(r, u)] = ("cap", f"at most {cap} {r.kind} notifications a day")
                else:
                    seen[(u, r.kind)] = seen.get((u, r.kind), 0) + 1
        return out

    def _grow(self, open_row: asyncpg.Record, r: Routing) -> Grow:
        """Collapse into the user's open notification of this group."""
        known = list(open_row["actors"])
        count = open_row["actor_count"]
        if r.actor is not None:
            if r.actor not in known:
                count += 1
            known = [r.actor, *[a for a in known if a != r.actor]][:MAX_ACTORS]
        title, body = render.texts(r.kind, r.payload, known, count)
        return Grow(int(open_row["id"]), known, count, title, body)

    # -- delivery planning ------------------------------------------------------------------

    async def _plan(
        self,
        conn: asyncpg.Connection,
        pairs: list[Pair],
        notification_of: dict[tuple[str, str], int],
        filtered: dict[Pair, tuple[str, str]],
        prefs: dict[str, Preferences],
        now: datetime,
    ) -> tuple[list[DeliveryRow], list[SkipGroup]]:
        """The rows to send from (queued), and what is skipped, grouped per event and way of
        skipping (most recipients of a fan-out share one: no address, not configured)."""
        rows: list[DeliveryRow] = []
        skip_groups: dict[tuple[str, str], SkipGroup] = {}
        emailed: list[str] = []
        for r, u in pairs:
            priority = KINDS[r.kind].priority
            nid, p = notification_of[(r.event_id, u)], prefs[u]
            skips: dict[str, tuple[str, str]] = {}
            if (r, u) in filtered:
                skips = {ch.value: filtered[(r, u)] for ch in Channel}
            else:
                rows.append(DeliveryRow(r.event_id, u, Channel.IN_APP, nid, priority, "queued"))
                quiet = quiet_until(p, now)
                for ch in EXTERNAL:
                    skip = r.in_app_only.get(u) or self._skip(ch, p, r.kind, priority)
                    if skip is not None:
                        skips[ch.value] = skip
                        continue
                    row = DeliveryRow(r.event_id, u, ch, nid, priority, "queued")
                    if ch is Channel.EMAIL:
                        emailed.append(u)
                        row.reason, row.detail = "batched", "waits for the user's hourly email"
                        row.batch_key = "email"
                    elif quiet is not None and not (
                        priority is Priority.IMMEDIATE and p.critical_breaks_quiet
                    ):
                        until = quiet.isoformat()
                        row.reason = "quiet_hours"
                        row.detail = f"held until quiet hours end ({until})"
                        row.batch_key, row.not_before = f"quiet:{until}", quiet
                    else:
                        row.not_before = now
                    rows.append(row)
            if skips:
                signature = repr(sorted(skips.items()))
                group = skip_groups.get((r.event_id, signature))
                if group is None:
                    group = SkipGroup(r.event_id, priority.value, skips)
                    skip_groups[(r.event_id, signature)] = group
                group.user_ids.append(u)
        if emailed:
            timing = await self.store.outbox.email_timing(conn, emailed)
            for row in rows:
                if row.channel is Channel.EMAIL:
                    row.not_before = self._email_due(now, *timing[row.user_id])
        return rows, list(skip_groups.values())

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
        pairs: list[Pair],
        filtered: dict[Pair, tuple[str, str]],
        prefs: dict[str, Preferences],
        now: datetime,
    ) -> list[tuple[str, datetime, dict[str, Any]]]:
        jobs: dict[str, tuple[str, datetime, dict[str, Any]]] = {}
        for r, user in pairs:
            mode = prefs[user].effective_digest()
            if (r, user) in filtered or mode == "off":
                continue
            at = next_digest_at(prefs[user], now, mode)
            payload = {"user_id": user, "mode": mode, "due": at.isoformat()}
            key = f"{DIGEST_JOB}:{user}:{at.isoformat()}"
            jobs[key] = (key, at, payload)
        return list(jobs.values())

    # -- sockets ----------------------------------------------------------------------------

    async def _tell_sockets(self, pairs: list[tuple[str, str]]) -> None:
        """Mark the pairs' queued in-app rows delivered, then tell the users' sockets, many
        user rooms per fan-out call."""
        taken = await self.store.outbox.take_in_app(pairs, self.now())
        emits = [
            (self.in_app.updated_event if row["event_count"] > 1 else self.in_app.new_event)(
                user, item(row), unread
            )
            for user, row, unread in taken
        ]
        for start in range(0, len(emits), EMIT_BATCH):
            await self.in_app.tell_many(emits[start : start + EMIT_BATCH])
        if taken:
            metrics.DELIVERIES.labels("in_app", "delivered", "").inc(len(taken))
