"""Domain events: the envelope every producer publishes and one pydantic model per event type.

Names follow seed 004 exactly (`content.created`, `hours.tipped`, ...). Payloads are strict:
unknown fields and wrong types are refused with field errors before anything is written.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    create_model,
    field_validator,
)

from server.clock import utcnow
from server.errors import validate
from server.rooms import ROOM_RE

Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Text = Annotated[str, StringConstraints(max_length=500)]


def _json_integer(v: Any) -> Any:
    """JSON Schema's integer: 7 and 7.0, not "7" or true (the strict fields refuse the rest)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


#: a message's seq: an integer as JSON Schema counts them (7.0 too), at least 1
Seq = Annotated[int, Field(ge=1, strict=True), BeforeValidator(_json_integer)]


_HOURS_TEXT = r"^(?!0+(\.0+)?$)\d{1,9}(\.\d{1,2})?$"
_HOURS_TEXT_RE = re.compile(_HOURS_TEXT)


def _hours(value: Any) -> Any:
    if isinstance(value, str) and _HOURS_TEXT_RE.match(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError('HOURS: a number such as 2.5, or a decimal string such as "2.50"')
    return value


#: an amount of HOURS above 0, at most 1e9, with at most 2 decimals: a JSON number or a
#: decimal string (money is often sent as text)
Hours = Annotated[
    Decimal,
    BeforeValidator(_hours),
    Field(gt=0, le=Decimal("1000000000"), max_digits=14, decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1_000_000_000,
                    "multipleOf": 0.01,
                },
                {"type": "string", "pattern": _HOURS_TEXT},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "number"}, mode="serialization"),
]
Cents = Annotated[int, Field(ge=0, le=10**12, strict=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentCreated(Payload):
    content_id: Id
    kind: Literal["post", "video", "article", "short", "audio", "image"]
    creator_id: Id | None = None
    title: Text | None = None
    zone: Id | None = None
    url: Annotated[str, StringConstraints(max_length=2048)] | None = None


class ContentEngaged(Payload):
    content_id: Id
    user_id: Id | None = None
    creator_id: Id | None = None


class ContentCommented(ContentEngaged):
    comment_id: Id
    text: Annotated[str, StringConstraints(max_length=4000)] | None = None


class HoursTipped(Payload):
    from_user: Id
    to_user: Id
    amount: Hours
    content_id: Id | None = None
    conversation_id: Id | None = None


class HoursEarned(Payload):
    user_id: Id
    amount: Hours
    source: Text | None = None


class HoursSpent(Payload):
    user_id: Id
    amount: Hours
    item: Text | None = None


class UserFollowed(Payload):
    follower_id: Id
    followee_id: Id


class UserSubscribed(Payload):
    subscriber_id: Id
    creator_id: Id
    tier: Id | None = None


class LiveStarted(Payload):
    live_id: Id
    host_id: Id
    kind: Literal["video", "audio"] = "video"
    title: Text | None = None


class LiveEnded(Payload):
    live_id: Id
    host_id: Id | None = None
    duration_s: Annotated[int, Field(ge=0, strict=True)] | None = None


class LiveViewerJoined(Payload):
    live_id: Id
    user_id: Id


class MessageSent(Payload):
    conversation_id: Id
    message_id: Id
    sender_id: Id
    seq: Seq | None = None
    recipients: Annotated[list[Id], Field(max_length=150)] = []
    muted: Annotated[list[Id], Field(max_length=150)] = Field(
        [], description="recipients who muted the conversation: told in-app only"
    )
    mentioned: Annotated[list[Id], Field(max_length=150)] = Field(
        [], description="recipients the message mentions (pushed by `message.mentioned`)"
    )


class MessageMentioned(Payload):
    conversation_id: Id
    message_id: Id
    sender_id: Id
    seq: Seq | None = None
    mentioned: Annotated[list[Id], Field(min_length=1, max_length=150)]


class MessageRead(Payload):
    conversation_id: Id
    reader_id: Id
    seq: Seq


class StorefrontPurchased(Payload):
    order_id: Id
    buyer_id: Id
    seller_id: Id
    product_id: Id
    amount_cents: Cents
    currency: Currency = "USD"


class StorefrontMembershipNew(Payload):
    member_id: Id
    creator_id: Id
    tier: Id
    amount_cents: Cents | None = None
    currency: Currency = "USD"


class GovernanceVoteCast(Payload):
    proposal_id: Id
    voter_id: Id
    choice: Id


class GovernanceProposalCreated(Payload):
    proposal_id: Id
    author_id: Id
    title: Text


EVENT_TYPES: dict[str, type[Payload]] = {
    "content.created": ContentCreated,
    "content.liked": ContentEngaged,
    "content.commented": ContentCommented,
    "content.shared": ContentEngaged,
    "content.saved": ContentEngaged,
    "hours.tipped": HoursTipped,
    "hours.earned": HoursEarned,
    "hours.spent": HoursSpent,
    "user.followed": UserFollowed,
    "user.subscribed": UserSubscribed,
    "live.started": LiveStarted,
    "live.ended": LiveEnded,
    "live.viewer_joined": LiveViewerJoined,
    "message.sent": MessageSent,
    "message.mentioned": MessageMentioned,
    "message.read": MessageRead,
    "storefront.purchased": StorefrontPurchased,
    "storefront.membership_new": StorefrontMembershipNew,
    "governance.vote_cast": GovernanceVoteCast,
    "governance.proposal_created": GovernanceProposalCreated,
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "content.created": {
        "subjects": ["zone:music"],
        "payload": {"content_id": "c_1", "kind": "video", "creator_id": "u_7", "title": "Hi"},
    },
    "content.liked": {
        "subjects": ["content:c_1"],
        "payload": {"content_id": "c_1", "user_id": "u_2"},
    },
    "content.commented": {
        "subjects": ["content:c_1"],
        "payload": {"content_id": "c_1", "user_id": "u_2", "comment_id": "m_9", "text": "wow"},
    },
    "content.shared": {
        "subjects": ["content:c_1"],
        "payload": {"content_id": "c_1", "user_id": "u_2"},
    },
    "content.saved": {
        "subjects": ["content:c_1"],
        "payload": {"content_id": "c_1", "user_id": "u_2"},
    },
    "hours.tipped": {
        "subjects": ["user:u_7"],
        "payload": {"from_user": "u_2", "to_user": "u_7", "amount": 500, "content_id": "c_1"},
    },
    "hours.earned": {"subjects": ["user:u_7"], "payload": {"user_id": "u_7", "amount": 12.5}},
    "hours.spent": {"subjects": ["user:u_2"], "payload": {"user_id": "u_2", "amount": 3}},
    "user.followed": {
        "subjects": ["user:u_7"],
        "payload": {"follower_id": "u_2", "followee_id": "u_7"},
    },
    "user.subscribed": {
        "subjects": ["user:u_7"],
        "payload": {"subscriber_id": "u_2", "creator_id": "u_7", "tier": "gold"},
    },
    "live.started": {
        "subjects": ["live:l_1", "zone:music"],
        "payload": {"live_id": "l_1", "host_id": "u_7", "title": "Late set"},
    },
    "live.ended": {"subjects": ["live:l_1"], "payload": {"live_id": "l_1", "duration_s": 3600}},
    "live.viewer_joined": {
        "subjects": ["live:l_1"],
        "payload": {"live_id": "l_1", "user_id": "u_2"},
    },
    "message.sent": {
        "subjects": ["user:u_7"],
        "payload": {"conversation_id": "k_1", "message_id": "m_1", "sender_id": "u_2"},
    },
    "message.mentioned": {
        "payload": {
            "conversation_id": "k_1",
            "message_id": "m_1",
            "sender_id": "u_2",
            "mentioned": ["u_7"],
        },
    },
    "message.read": {
        "subjects": ["user:u_2"],
        "payload": {"conversation_id": "k_1", "reader_id": "u_7", "seq": 4},
    },
    "storefront.purchased": {
        "subjects": ["user:u_7"],
        "payload": {
            "order_id": "o_1",
            "buyer_id": "u_2",
            "seller_id": "u_7",
            "product_id": "p_1",
            "amount_cents": 1999,
        },
    },
    "storefront.membership_new": {
        "subjects": ["user:u_7"],
        "payload": {"member_id": "u_2", "creator_id": "u_7", "tier": "gold", "amount_cents": 500},
    },
    "governance.vote_cast": {
        "subjects": ["zone:governance"],
        "payload": {"proposal_id": "g_1", "voter_id": "u_2", "choice": "yes"},
    },
    "governance.proposal_created": {
        "subjects": ["zone:governance"],
        "payload": {"proposal_id": "g_1", "author_id": "u_7", "title": "Lower fees"},
    },
}

#: a room name (checked by EventIn with a message that names the kinds; the pattern is documented)
Room = Annotated[
    str, StringConstraints(max_length=80), Field(json_schema_extra={"pattern": ROOM_RE.pattern})
]


class EventIn(BaseModel):
    """What a producer sends: POST /v1/events body, `ours publish`, or a service call."""

    model_config = ConfigDict(extra="forbid")

    type: Annotated[str, StringConstraints(max_length=64)]
    payload: dict[str, Any]
    subjects: Annotated[list[Room], Field(max_length=100)] = []
    actor: Id | None = None
    id: uuid.UUID | None = None
    audience: Id | None = Field(
        None,
        description="a registered audience (PUT /v1/audiences/{id}/members) whose members the"
        " notification router adds to the recipients; the socket fan-out still goes to"
        " `subjects`",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type; GET /v1/events/types lists the {len(EVENT_TYPES)}"
            )
        return v

    @field_validator("subjects")
    @classmethod
    def _rooms(cls, v: list[str]) -> list[str]:
        for room in v:
            if not ROOM_RE.match(room):
                raise ValueError(f"{room!r} is not a room (zone:, content:, live:, user:, ...)")
        return list(dict.fromkeys(v))


def _typed(name: str, payload: type[Payload]) -> type[BaseModel]:
    model = create_model(
        "".join(part.capitalize() for part in name.replace("_", ".").split(".")) + "In",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A `{name}` event as a producer sends it.",
        type=(Literal[name], ...),
        payload=(payload, ...),
        subjects=(Annotated[list[Room], Field(max_length=100)], []),
        actor=(Id | None, None),
        id=(uuid.UUID | None, None),
        audience=(Id | None, None),
    )
    return model


#: EventIn with its payload per type, one schema per event type (the POST /v1/events body as
#: documented): what `build_event` checks in two steps, EventIn then the type's payload model
EventInBody: Any = Annotated[
    Union[tuple(_typed(name, model) for name, model in EVENT_TYPES.items())],  # noqa: UP007
    Field(discriminator="type"),
]


class Event(BaseModel):
    """The envelope on the bus and on the wire: {id, type, actor, subjects, payload, ts}."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    actor: str | None
    subjects: list[str]
    payload: dict[str, Any]
    ts: str
    #: a registered audience whose members the router adds to the recipients (opaque here)
    audience: str | None = None

    def wire(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "type": self.type,
            "actor": self.actor,
            "subjects": self.subjects,
            "payload": self.payload,
            "ts": self.ts,
        }
        if self.audience is not None:
            out["audience"] = self.audience
        return out


def build_event(raw: Any, *, idempotency_key: str | None = None, scope: str = "") -> Event:
    """Validate a producer's event and make its envelope; raise ApiError(bad_request) with
    field errors. An idempotency key (scoped to the producer) fixes the event id, so a retry
    publishes the same id and is a no-op on the bus."""
    inp = validate(EventIn, raw, "event")
    payload = validate(EVENT_TYPES[inp.type], inp.payload, f"{inp.type} payload", prefix="payload.")
    if inp.id is not None:
        event_id = str(inp.id)
    elif idempotency_key is not None:
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ours:{scope}:{idempotency_key}"))
    else:
        event_id = str(uuid.uuid4())
    return Event(
        id=event_id,
        type=inp.type,
        actor=inp.actor,
        subjects=inp.subjects,
        payload=payload.model_dump(mode="json", exclude_none=True),
        ts=utcnow().isoformat(),
        audience=inp.audience,
    )


def schemas() -> dict[str, Any]:
    """Every event type with its JSON Schema and an example body POST /v1/events accepts."""
    return {
        name: {
            "schema": model.model_json_schema(),
            "example": {"type": name, **EXAMPLES[name]},
        }
        for name, model in EVENT_TYPES.items()
    }
