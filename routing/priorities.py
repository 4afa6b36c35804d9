"""What each event means for the people it concerns: the notification kind, its priority (seed
004: immediate, standard, batch, silent) and where its recipients and actor are in the payload.

Two readable tables: KINDS (kind -> priority, aggregation, daily cap) and EVENTS (event type ->
kind + payload fields). Everything else in the router reads these; change a priority here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Priority(StrEnum):
    IMMEDIATE = "immediate"  # tips received, sales, live starts: push now, SMS allowed
    STANDARD = "standard"  # likes, comments, follows, mentions: push, hourly email
    BATCH = "batch"  # digest, milestones, announcements: in-app + the digest email
    SILENT = "silent"  # views, minor engagement: in-app only


class Channel(StrEnum):
    IN_APP = "in_app"
    PUSH = "push"
    EMAIL = "email"
    SMS = "sms"
    TELEGRAM = "telegram"


EXTERNAL = (Channel.PUSH, Channel.EMAIL, Channel.SMS, Channel.TELEGRAM)

#: which channels a priority may use at all (preferences can only narrow this)
CHANNELS_FOR: dict[Priority, frozenset[Channel]] = {
    Priority.IMMEDIATE: frozenset(Channel),
    Priority.STANDARD: frozenset({Channel.IN_APP, Channel.PUSH, Channel.EMAIL, Channel.TELEGRAM}),
    Priority.BATCH: frozenset({Channel.IN_APP}),  # and the digest email
    Priority.SILENT: frozenset({Channel.IN_APP}),
}


@dataclass(frozen=True, slots=True)
class Kind:
    priority: Priority
    aggregate: bool = False  # similar ones within the window collapse into one inbox item
    daily_cap: int | None = None  # at most this many in any 24 hours (more are dropped)
    default_on: bool = True  # the per-type switch's default (seed 000: matches are opt-in)


# fmt: off
KINDS: dict[str, Kind] = {
    # kind            priority                aggregate       cap           opt-in
    "tip":          Kind(Priority.IMMEDIATE),
    "sale":         Kind(Priority.IMMEDIATE),
    "membership":   Kind(Priority.IMMEDIATE),
    "live":         Kind(Priority.IMMEDIATE),
    "follow":       Kind(Priority.STANDARD,  aggregate=True),
    "like":         Kind(Priority.STANDARD,  aggregate=True),
    "comment":      Kind(Priority.STANDARD,  aggregate=True),
    "mention":      Kind(Priority.STANDARD),
    "subscribe":    Kind(Priority.STANDARD,  aggregate=True),
    "message":      Kind(Priority.STANDARD,  aggregate=True),
    "post":         Kind(Priority.STANDARD),
    "match":        Kind(Priority.STANDARD,  daily_cap=3,                 default_on=False),
    "digest":       Kind(Priority.BATCH),
    "milestone":    Kind(Priority.BATCH),
    "announcement": Kind(Priority.BATCH),
    "view":         Kind(Priority.SILENT,    aggregate=True),
    "share":        Kind(Priority.SILENT,    aggregate=True),
    "save":         Kind(Priority.SILENT,    aggregate=True),
    "earning":      Kind(Priority.SILENT,    aggregate=True),
}
# fmt: on


@dataclass(frozen=True, slots=True)
class EventRule:
    kind: str
    recipients: tuple[str, ...] = ()  # payload fields naming who is told (plus user:* subjects)
    actor: str | None = None  # payload field naming who acted (never told of their own act)
    group: str | None = None  # payload field that scopes aggregation (e.g. the content)
    #: payload fields naming recipients told in-app only, each with the reason and its words
    in_app_only: tuple[tuple[str, str, str], ...] = ()


#: `message.sent`: who muted the conversation, and who the message mentions (their mention
#: notification, `message.mentioned`, is the one that pushes), stay in-app
MESSAGE_IN_APP_ONLY = (
    ("muted", "muted", "the recipient muted this conversation"),
    ("mentioned", "mentioned", "the mention notification of this message goes out instead"),
)


# fmt: off
EVENTS: dict[str, EventRule] = {
    # event type               kind           recipients from   actor from    group by
    "hours.tipped":            EventRule("tip",        ("to_user",),     "from_user"),
    "storefront.purchased":    EventRule("sale",       ("seller_id",),   "buyer_id"),
    "storefront.membership_new": EventRule("membership", ("creator_id",), "member_id"),
    "live.started":            EventRule("live",       (),               "host_id"),
    "user.followed":           EventRule("follow",     ("followee_id",), "follower_id"),
    "user.subscribed":         EventRule("subscribe",  ("creator_id",),  "subscriber_id"),
    "content.liked":           EventRule("like",       ("creator_id",),  "user_id",   "content_id"),
    "content.commented":       EventRule("comment",    ("creator_id",),  "user_id",   "content_id"),
    "content.created":         EventRule("post",       (),               "creator_id"),
    "message.sent":            EventRule("message",    ("recipients",),  "sender_id", "conversation_id", MESSAGE_IN_APP_ONLY),  # noqa: E501
    "message.mentioned":       EventRule("mention",    ("mentioned",),   "sender_id"),
    "content.shared":          EventRule("share",      ("creator_id",),  "user_id",   "content_id"),
    "content.saved":           EventRule("save",       ("creator_id",),  "user_id",   "content_id"),
    "live.viewer_joined":      EventRule("view",       (),               "user_id",   "live_id"),
    "hours.earned":            EventRule("earning",    ("user_id",)),
    "governance.proposal_created": EventRule("announcement", (),         "author_id"),
}
# fmt: on

MAX_RECIPIENTS = 10_000


def kind_of(name: str) -> Kind:
    return KINDS[name]


def actor_of(rule: EventRule, payload: dict[str, Any], envelope_actor: str | None) -> str | None:
    if rule.actor and isinstance(payload.get(rule.actor), str):
        return str(payload[rule.actor])
    return envelope_actor


def in_app_only_of(rule: EventRule, payload: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Recipient -> (reason, detail) for those the rule keeps in-app only (first field wins)."""
    out: dict[str, tuple[str, str]] = {}
    for field, reason, detail in rule.in_app_only:
        value = payload.get(field)
        if isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    out.setdefault(v, (reason, detail))
    return out


def recipients_of(
    rule: EventRule, payload: dict[str, Any], subjects: list[str], actor: str | None
) -> list[str]:
    """`user:*` subjects plus the rule's payload fields, in order, without the actor."""
    out: dict[str, None] = {}
    for room in subjects:
        if room.startswith("user:"):
            out[room[5:]] = None
    for field in rule.recipients:
        value = payload.get(field)
        if isinstance(value, str):
            out[value] = None
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    out[v] = None
    out.pop("", None)
    if actor is not None:
        out.pop(actor, None)
    return list(out)[:MAX_RECIPIENTS]
