"""The words: a notification's title and body, summaries of several, and the email parts."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

Texts = tuple[str, str]


def who(actors: list[str], count: int) -> str:
    """'ana', 'ana and bo', 'ana and 12 others' (most recent actor first)."""
    if not actors:
        return "Someone"
    if count <= 1:
        return actors[0]
    if count == 2 and len(actors) >= 2:
        return f"{actors[0]} and {actors[1]}"
    return f"{actors[0]} and {count - 1} others"


def _money(p: dict[str, Any]) -> str:
    cents = p.get("amount_cents")
    if cents is None:
        return ""
    return f"{cents / 100:.2f} {p.get('currency', 'USD')}"


def _hours(p: dict[str, Any]) -> str:
    return f"{p.get('amount', '?')} HRS"


def _title(p: dict[str, Any]) -> str:
    t = p.get("title")
    return f": {t}" if t else ""


_TEXTS: dict[str, Callable[[str, dict[str, Any], int], Texts]] = {
    "tip": lambda w, p, n: ("New tip", f"{w} tipped you {_hours(p)}"),
    "sale": lambda w, p, n: (
        "New sale",
        f"{w} bought {p.get('product_id', 'a product')} ({_money(p)})",
    ),
    "membership": lambda w, p, n: (
        "New member",
        f"{w} joined your {p.get('tier', '')} membership".replace("  ", " "),
    ),
    "live": lambda w, p, n: ("Live now", f"{w} is live{_title(p)}"),
    "follow": lambda w, p, n: ("New follower" if n == 1 else "New followers", f"{w} followed you"),
    "subscribe": lambda w, p, n: ("New subscriber", f"{w} subscribed to you"),
    "like": lambda w, p, n: ("New like", f"{w} liked your post"),
    "comment": lambda w, p, n: (
        "New comment",
        f"{w} commented: {p['text'][:120]}"
        if n == 1 and p.get("text")
        else f"{w} commented on your post",
    ),
    "mention": lambda w, p, n: ("You were mentioned", f"{w} mentioned you"),
    "message": lambda w, p, n: (
        "New message",
        f"{w} sent you a message" if n == 1 else f"{w} sent you messages",
    ),
    "post": lambda w, p, n: ("New post", f"{w} posted{_title(p)}"),
    "share": lambda w, p, n: ("Shared", f"{w} shared your post"),
    "save": lambda w, p, n: ("Saved", f"{w} saved your post"),
    "view": lambda w, p, n: ("New viewers", f"{w} joined your live"),
    "earning": lambda w, p, n: ("HOURS earned", f"You earned {_hours(p)}"),
    "announcement": lambda w, p, n: ("Announcement", f"New proposal{_title(p)}"),
    "milestone": lambda w, p, n: ("Milestone", str(p.get("text", "You reached a milestone"))),
    "match": lambda w, p, n: (
        str(p.get("title", "Someone's doing the same thing")),
        str(p.get("text", "Someone else is doing what you do")),
    ),
    "digest": lambda w, p, n: ("Your digest", str(p.get("text", ""))),
}


def texts(kind: str, payload: dict[str, Any], actors: list[str], count: int) -> Texts:
    make = _TEXTS.get(kind, lambda w, p, n: ("Notification", f"{w}: {kind}"))
    title, body = make(who(actors, count), payload, max(count, 1))
    return title[:200], body[:500]


def summary(items: list[dict[str, Any]]) -> Texts:
    """One message for several notifications (quiet-hours summary, batched email subject)."""
    if len(items) == 1:
        return items[0]["title"], items[0]["body"]
    shown = "; ".join(i["body"] for i in items[:3])
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return f"{len(items)} new notifications", f"{shown}{more}"[:500]


def email(items: list[dict[str, Any]], *, heading: str, total: int | None = None) -> dict[str, str]:
    """Subject, HTML and text parts for a list of notifications."""
    total = len(items) if total is None else total
    subject = items[0]["body"] if total == 1 else f"{heading}: {total} new notifications"
    lines = [f"- {i['title']}: {i['body']}" for i in items]
    more = total - len(items)
    if more > 0:
        lines.append(f"... and {more} more in the app")
    text = f"{heading}\n\n" + "\n".join(lines) + "\n\nManage notifications in the app settings.\n"
    rows = "".join(
        f"<li><strong>{html.escape(i['title'])}</strong>: {html.escape(i['body'])}</li>"
        for i in items
    )
    if more > 0:
        rows += f"<li>... and {more} more in the app</li>"
    body = (
        f"<!doctype html><html><body><h1>{html.escape(heading)}</h1><ul>{rows}</ul>"
        "<p>Manage notifications in the app settings.</p></body></html>"
    )
    return {"subject": subject[:200], "html": body, "text": text}
