"""What the bot says: the text of /status, /hours, /trending, /revenue and the daily brief,
built from the event log, the bot's counters and the nodes' health. Plain text (no parse mode),
so nothing users put in titles or ids can change the formatting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from bots.health import Health, Snapshot
from bots.store import BotStore, Money, TrendingRow

TRENDING_WINDOW = timedelta(hours=24)
TRENDING_HALF_LIFE_S = 6 * 3600.0
#: how much one event counts towards "trending" (decayed by age, half-life 6 h)
TRENDING_WEIGHTS: dict[str, float] = {
    "content.liked": 1.0,
    "content.saved": 2.0,
    "content.commented": 3.0,
    "content.shared": 5.0,
    "hours.tipped": 4.0,  # a tip on a piece of content (payload.content_id)
}
_COUNT_NAMES = {
    "content.liked": ("like", "likes"),
    "content.saved": ("save", "saves"),
    "content.commented": ("comment", "comments"),
    "content.shared": ("share", "shares"),
    "hours.tipped": ("tip", "tips"),
}


MILESTONE_STEPS = (1, 1.5, 2, 2.5, 5, 7.5)

# -- formatting ---------------------------------------------------------------------------------


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_hours(amount: Decimal | float | int) -> str:
    d = Decimal(str(amount)).quantize(Decimal("0.01"))
    if d == d.to_integral_value():
        return f"{int(d):,}"
    return f"{d:,.2f}".rstrip("0").rstrip(".")


def fmt_money(cents: int, currency: str = "USD") -> str:
    whole, frac = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    amount = f"{whole:,}" if frac == 0 else f"{whole:,}.{frac:02d}"
    if currency == "USD":
        return f"{sign}${amount}"
    return f"{sign}{amount} {currency}"


def fmt_moneys(rows: list[Money]) -> str:
    rows = [r for r in rows if r.cents]
    return " + ".join(fmt_money(r.cents, r.currency) for r in rows) if rows else "$0"


def plural(n: int, one: str, many: str) -> str:
    return f"{fmt_int(n)} {one if n == 1 else many}"


def fmt_date(d: datetime) -> str:
    return f"{d:%b} {d.day}, {d.year}"


def next_milestone(users: int) -> int:
    exp = 1
    while True:
        for step in MILESTONE_STEPS:
            value = int(step * 10**exp)
            if value > users:
                return value
        exp += 1


def local_midnight(now: datetime, tz: str) -> datetime:
    local = now.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date(), time(0), tzinfo=ZoneInfo(tz))


def month_start(now: datetime, tz: str) -> datetime:
    local = now.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date().replace(day=1), time(0), tzinfo=ZoneInfo(tz))


def issues(snap: Snapshot) -> list[str]:
    """Problems worth an admin's attention, or nothing."""
    out = []
    if snap.dead_letters:
        out.append(plural(snap.dead_letters, "dead letter", "dead letters"))
    if snap.errors >= 5 and snap.error_ratio >= 0.01:
        out.append(f"error rate {snap.error_ratio:.1%}")
    worst = max(snap.lag.values(), default=0)
    if worst >= 1000:
        out.append(f"bus lag {fmt_int(worst)}")
    return out


def _counts(row: TrendingRow) -> str:
    parts = []
    for etype, (one, many) in _COUNT_NAMES.items():
        if row.counts.get(etype):
            parts.append(plural(row.counts[etype], one, many))
    return ", ".join(parts)


def _title(row: TrendingRow) -> str:
    name = f'"{row.title}"' if row.title else row.content_id
    return f"{name} by @{row.creator_id}" if row.creator_id else name


# -- reports --------------------------------------------------------------------------------------


#: HOURS balance and tier of a user: {"balance": ..., "tier": ...} (the HOURS ledger, handed in)
Ledger = Callable[[str], Awaitable[dict[str, Any]]]


class Reports:
    def __init__(self, store: BotStore, health: Health, ledger: Ledger) -> None:
        self.store = store
        self.health = health
        self.ledger = ledger

    async def status(self, tz: str, now: datetime) -> str:
        snap = await self.health.snapshot()
        revenue = await self.store.revenue(local_midnight(now, tz), now)
        _, _, active = await self.store.user_counts(now - timedelta(hours=24), now)
        problems = issues(snap)
        icon = "🔴" if snap.errors >= 5 and snap.error_ratio >= 0.05 else "🟡" if problems else "🟢"
        total = sum(snap.connections.values())
        per_ns = ", ".join(f"{ns} {n}" for ns, n in snap.connections.items())
        lag_total = sum(snap.lag.values())
        lag_detail = ", ".join(f"{g} {n}" for g, n in snap.lag.items())
        purchases = sum(r.purchases for r in revenue)
        memberships = sum(r.memberships for r in revenue)
        local = now.astimezone(ZoneInfo(tz))
        lines = [
            f"{icon} OURS status — {local:%H:%M} {tz}",
            "",
            f"🔌 Connections: {fmt_int(total)}"
            + (f" ({per_ns})" if per_ns else "")
            + f" · {plural(snap.nodes, 'node', 'nodes')}",
            f"👥 Active users: {fmt_int(snap.users_connected)} connected now"
            f" · {fmt_int(active)} active in 24 h",
            f"📨 Bus lag: {fmt_int(lag_total)}" + (f" ({lag_detail})" if lag_detail else ""),
            f"⚠️ Errors: {snap.error_ratio:.1%} ({fmt_int(snap.errors)} of"
            f" {fmt_int(snap.requests)} requests, last {snap.window_s // 60} min)",
            f"☠️ Dead letters: {fmt_int(snap.dead_letters)}",
            f"💰 Revenue today: {fmt_moneys(revenue)}"
            f" ({plural(purchases, 'purchase', 'purchases')},"
            f" {plural(memberships, 'membership', 'memberships')})",
        ]
        return "\n".join(lines)

    async def hours(self, user_id: str) -> str:
        """Balance and tier from the HOURS ledger; the activity line from the event log."""
        acct = await self.store.hours_account(user_id)
        data = await self.ledger(user_id)
        balance, tier_name = Decimal(str(data["balance"])), str(data["tier"])
        return "\n".join(
            [
                f"⏣ Your HOURS balance: {fmt_hours(balance)} HRS",
                f"🏅 Tier: {tier_name.capitalize()}",
                "",
                f"Activity: earned {fmt_hours(acct['earned'])}"
                f" · tips received {fmt_hours(acct['tips_in'])}"
                f" · tips sent {fmt_hours(acct['tips_out'])} · spent {fmt_hours(acct['spent'])}",
            ]
        )

    async def trending_rows(self, now: datetime, limit: int = 5) -> list[TrendingRow]:
        return await self.store.trending(
            now,
            TRENDING_WEIGHTS,
            window=TRENDING_WINDOW,
            half_life_s=TRENDING_HALF_LIFE_S,
            limit=limit,
        )

    async def trending(self, now: datetime) -> str:
        rows = await self.trending_rows(now)
        if not rows:
            return "🔥 Trending now: nothing yet — no likes, comments, shares or tips in 24 h."
        lines = ["🔥 Trending now (last 24 h)", ""]
        for i, row in enumerate(rows, 1):
            lines.append(f"{i}. {_title(row)} — score {row.score:.1f} ({_counts(row)})")
        return "\n".join(lines)

    async def revenue(self, tz: str, now: datetime) -> str:
        today = local_midnight(now, tz)
        month = month_start(now, tz)
        week = now - timedelta(days=7)
        lines = [f"💰 Revenue ({tz})", ""]
        for label, since in (("Today", today), ("Last 7 days", week), ("This month", month)):
            rows = await self.store.revenue(since, now)
            purchases = sum(r.purchases for r in rows)
            memberships = sum(r.memberships for r in rows)
            lines.append(
                f"{label}: {fmt_moneys(rows)} — {plural(purchases, 'purchase', 'purchases')},"
                f" {plural(memberships, 'new membership', 'new memberships')}"
            )
        tips_today = (await self.store.hours_totals(today, now))["hours.tipped"]
        tips_month = (await self.store.hours_totals(month, now))["hours.tipped"]
        lines.append(
            f"⏣ Tips today: {fmt_hours(tips_today[1])} HRS in"
            f" {plural(tips_today[0], 'tip', 'tips')}"
            f" (this month: {fmt_hours(tips_month[1])} HRS in"
            f" {plural(tips_month[0], 'tip', 'tips')})"
        )
        top = await self.store.top_seller(today, now)
        if top:
            lines.append(f"🏆 Top seller today: @{top[0]} ({fmt_money(top[2], top[1])})")
        return "\n".join(lines)

    async def brief(self, tz: str, now: datetime) -> str:
        """The daily brief (seed 004's format); "today" is the 24 hours before `now`."""
        since = now - timedelta(hours=24)
        local = now.astimezone(ZoneInfo(tz))
        total, new, _ = await self.store.user_counts(since, now)
        content = await self.store.content_created(since, now)
        hours = await self.store.hours_totals(since, now)
        revenue_day = await self.store.revenue(since, now)
        revenue_month = await self.store.revenue(month_start(now, tz), now)
        top = await self.trending_rows(now, limit=1)
        earner = await self.store.top_earner(since, now)
        problems = issues(await self.health.snapshot())
        parts = [
            plural(content.pop("post", 0), "new post", "new posts"),
            plural(content.pop("video", 0), "video", "videos"),
            plural(content.pop("article", 0), "article", "articles"),
        ]
        parts += [plural(n, kind, kind + "s") for kind, n in sorted(content.items()) if n]
        if top:
            row = top[0]
            interactions = sum(row.counts.values())
            trending = f"{_title(row)} ({plural(interactions, 'interaction', 'interactions')})"
        else:
            trending = "nothing yet"
        milestone = next_milestone(total)
        lines = [
            f"📊 OURS Daily Brief — {fmt_date(local)}",
            "",
            f"👥 Users: {fmt_int(total)} (+{fmt_int(new)} today)",
            f"📝 Content: {', '.join(parts)}",
            f"⏣ HOURS: {fmt_hours(hours['hours.earned'][1])} earned,"
            f" {fmt_hours(hours['hours.tipped'][1])} tipped,"
            f" {fmt_hours(hours['hours.spent'][1])} spent",
            f"💰 Revenue: {fmt_moneys(revenue_day)} today ({fmt_moneys(revenue_month)} this month)",
            f"🔥 Trending: {trending}",
            "🚀 Top Earner: "
            + (f"@{earner[0]} ({fmt_hours(earner[1])} HRS today)" if earner else "nobody yet"),
            f"⚠️ Issues: {', '.join(problems) if problems else 'None'}",
            "",
            f"Next milestone: {fmt_int(milestone)} users ({fmt_int(milestone - total)} to go)",
        ]
        return "\n".join(lines)
