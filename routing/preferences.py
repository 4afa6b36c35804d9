"""A user's notification preferences: the model, its defaults (seeds 000 and 004) and updates.

Level (seed 000) decides which notifications may leave the in-app inbox:
  all      every kind, by its priority (the default)
  matches  only `match` notifications go to push/email/SMS/Telegram
  daily    nothing goes out one by one; the digest comes daily
  none     nothing goes out; the in-app inbox still records
Quiet hours default to 23:00-08:00 in the user's time zone (UTC until they set one); the digest
defaults to weekly, Sunday 09:00 local time.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from routing.priorities import KINDS, Channel
from server.clock import zone_schema
from server.contract import Outgoing

Level = Literal["none", "daily", "matches", "all"]
DigestMode = Literal["off", "daily", "weekly"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ZoneName = Annotated[str, StringConstraints(max_length=64), Field(json_schema_extra=zone_schema)]
HHMM = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{2,63}$")


def parse_hhmm(value: str) -> time:
    h, m = value.split(":")
    return time(int(h), int(m))


def _check_tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. Europe/Berlin)") from None
    return v


def _check_email(v: str | None) -> str | None:
    """An address, or "" / None to remove it."""
    if v and not EMAIL.match(v):
        raise ValueError("not an email address")
    return v


def _check_phone(v: str | None) -> str | None:
    if v and not E164.match(v):
        raise ValueError("phone must be E.164, e.g. +4915112345678")
    return v


#: contact data as users and the platform send it ("" removes it)
Email = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(_check_email),
    Field(json_schema_extra={"pattern": "^$|" + EMAIL.pattern}),
]
Phone = Annotated[
    str,
    StringConstraints(max_length=16),
    AfterValidator(_check_phone),
    Field(json_schema_extra={"pattern": "^$|" + E164.pattern}),
]


def _check_types(v: dict[str, bool]) -> dict[str, bool]:
    unknown = sorted(set(v) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown notification types {unknown}; known: {sorted(KINDS)}")
    return v


class QuietHours(Outgoing):
    """No push/SMS/Telegram between `start` and `end` (local time, HH:MM; may wrap midnight)."""

    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool = True
    start: HHMM = "23:00"
    end: HHMM = "08:00"


class Preferences(Outgoing):
    """What GET /v1/me/preferences, PUT /v1/me/preferences, PUT /v1/users/{id}/contact,
    `preferences:get` and `preferences:set` return (`public()`: every type and channel
    spelled out); also the stored document."""

    model_config = ConfigDict(extra="forbid")

    level: Level = Field(
        "all",
        description="which notifications leave the in-app inbox: all (by priority), matches"
        " (only match notifications), daily (the daily digest only), none",
    )
    types: dict[str, bool] = Field(
        default_factory=dict,
        description="per notification type (tip, like, follow, ...): on or off",
    )
    channels: dict[Channel, bool] = Field(
        default_factory=dict, description="per channel: on or off"
    )
    quiet_hours: QuietHours = Field(default_factory=QuietHours)
    timezone: str = Field("UTC", description="IANA time zone of quiet hours and the digest")
    digest: DigestMode = Field("weekly", description="how often the digest email comes")
    digest_time: HHMM = Field("09:00", description="local time of the digest (HH:MM)")
    digest_day: Weekday = Field("sun", description="the weekly digest's day")
    critical_breaks_quiet: bool = Field(
        False, description="immediate notifications (tips, sales, ...) ignore quiet hours"
    )
    email: str | None = None
    phone: str | None = Field(None, description="E.164")
    phone_verified: bool = Field(
        False, description="confirmed by the platform (SMS goes only to a verified phone)"
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    @field_validator("types")
    @classmethod
    def _types(cls, v: dict[str, bool]) -> dict[str, bool]:
        return _check_types(v)

    def type_on(self, kind: str) -> bool:
        return self.types.get(kind, KINDS[kind].default_on)

    def channel_on(self, channel: Channel) -> bool:
        return self.channels.get(channel, True)

    def refuses(self, channel: Channel, kind: str) -> str | None:
        """Why these preferences keep a `kind` notification off an outward `channel`."""
        if not self.channel_on(channel):
            return f"{channel} is switched off"
        if self.level in ("none", "daily"):
            return f"notification level is {self.level}"
        if self.level == "matches" and kind != "match":
            return "notification level is matches: only match notifications go out"
        return None

    def effective_digest(self) -> DigestMode:
        if self.level == "none":
            return "off"
        if self.level == "daily":
            return "daily"
        return self.digest

    def public(self) -> dict[str, Any]:
        """The full document, with every type and channel switch spelled out."""
        out = self.model_dump(mode="json")
        out["types"] = {k: self.type_on(k) for k in KINDS}
        out["channels"] = {c.value: self.channel_on(c) for c in Channel}
        return out


class PreferencesUpdate(BaseModel):
    """PUT /v1/me/preferences and `preferences:set`: any subset; omitted fields keep their value,
    `types`/`channels` merge key by key. `phone_verified` is not the user's to set: changing
    the phone clears it, and the platform confirms it (PUT /v1/users/{id}/contact)."""

    model_config = ConfigDict(extra="forbid")

    level: Level | None = None
    types: dict[str, StrictBool] | None = Field(
        None, max_length=len(KINDS), json_schema_extra={"propertyNames": {"enum": list(KINDS)}}
    )
    channels: dict[Channel, StrictBool] | None = None
    quiet_hours: QuietHours | None = None
    timezone: (
        Annotated[str, StringConstraints(max_length=64), Field(json_schema_extra=zone_schema)]
        | None
    ) = None
    digest: DigestMode | None = None
    digest_time: HHMM | None = None
    digest_day: Weekday | None = None
    critical_breaks_quiet: StrictBool | None = None
    email: Email | None = None
    phone: Phone | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _check_tz(v)

    @field_validator("types")
    @classmethod
    def _types(cls, v: dict[str, bool] | None) -> dict[str, bool] | None:
        return None if v is None else _check_types(v)


class ContactUpdate(BaseModel):
    """PUT /v1/users/{id}/contact (API key or admin): the platform's verified contact data."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    phone: Phone | None = None
    phone_verified: StrictBool | None = None


def apply_update(prefs: Preferences, upd: PreferencesUpdate | ContactUpdate) -> Preferences:
    data = prefs.model_dump()
    for field, value in upd.model_dump(exclude_unset=True).items():
        if field in ("types", "channels") and value is not None:
            data[field] = {**data[field], **value}
        elif field in ("email", "phone"):
            if field == "phone" and value != data["phone"]:
                data["phone_verified"] = False
            data[field] = value or None
        elif value is not None:
            data[field] = value
    if isinstance(upd, ContactUpdate) and upd.phone_verified is not None:
        data["phone_verified"] = upd.phone_verified and bool(data["phone"])
    return Preferences.model_validate(data)
