"""HTTP routes of a user's data (thin: authenticate, call the exporter or the eraser, audit).

GET    /v1/me/export              user JWT: everything of theirs as one JSON document
DELETE /v1/me                     user JWT: erase their account data; optional {reason}
DELETE /v1/admin/users/{user_id}  API key or admin JWT: erase a user; optional {reason}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.auth import SUB_RE, Principal
from server.clock import utcnow
from server.contract import Outgoing
from server.errors import Code
from server.http_api import (
    ADMIN,
    NODE,
    USER,
    envelope,
    path_params,
    read_body,
    require_caller,
    require_user,
)
from server.openapi import operation
from server.policy import Action, require

if TYPE_CHECKING:
    from privacy.feature import PrivacyFeature

MAX_REASON = 500


PRIVACY: web.AppKey[PrivacyFeature] = web.AppKey("privacy.feature")

#: database rows as JSON (privacy's `records`): the table's columns (server/migrations),
#: times ISO 8601, uuids and amounts as strings
Rows = list[dict[str, Any]]


class EraseRequest(BaseModel):
    """The optional body of an erasure: why (recorded in the audit log)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[str, StringConstraints(max_length=MAX_REASON)] | None = None


class UserPath(BaseModel):
    user_id: Annotated[str, StringConstraints(pattern=SUB_RE.pattern)] = Field(
        description="the user id (1-64 of letters, digits, _ . -)"
    )


class Erased(Outgoing):
    erased: Literal[True]
    pseudonym: str = Field(
        description="erased:<20 hex digits>: what now stands for the user in records kept"
        " (the audit log, the ledger, the other side of conversations)"
    )
    rows: dict[str, int] = Field(
        description="rows removed or anonymized, by what they were (tables, redis keys)"
    )


# -- the export -------------------------------------------------------------------------------


class ExportTelegram(Outgoing):
    chat_id: int
    role: str
    tz: str
    alerts: bool
    linked_at: str


class ExportLinkCode(Outgoing):
    expires_at: str
    used_at: str | None


class ExportBriefSent(Outgoing):
    local_date: str = Field(description="YYYY-MM-DD in the user's time zone")
    sent_at: str


class ExportSeen(Outgoing):
    first_seen: str
    last_seen: str


class ExportPresence(Outgoing):
    invisible: bool
    last_seen: float | None = Field(description="unix seconds; null if never seen")


class ExportProfile(Outgoing):
    """Filled by several features (each key present when its feature runs)."""

    telegram: ExportTelegram | None = Field(None, description="the Telegram link (bots)")
    telegram_link_codes: list[ExportLinkCode] | None = Field(
        None, description="link codes made (their hashes left out)"
    )
    daily_briefs_sent: list[ExportBriefSent] | None = None
    seen_on_the_bus: ExportSeen | None = Field(
        None, description="first and last event of theirs the bot's statistics saw"
    )
    presence: ExportPresence | None = None


class ExportActivityEntry(Outgoing):
    id: str
    kind: str
    text: str
    created_at: str
    expires_at: str


class ExportActivity(Outgoing):
    opted_in_at: str | None
    entries: list[ExportActivityEntry]


class ExportDevice(Outgoing):
    """A push device (its token left out)."""

    platform: Literal["ios", "android", "web"]
    created_at: str
    last_seen_at: str


class ExportAudio(Outgoing):
    rooms_hosted: Rows = Field(description="rows of audio_rooms")
    memberships: Rows = Field(description="rows of audio_members")


class ExportMedia(Outgoing):
    videos: Rows = Field(description="rows of media")
    live_inputs: Rows = Field(description="rows of live_inputs (stream keys left out)")


class ExportHours(Outgoing):
    account: str
    balance: str = Field(description="a decimal number of HOURS")
    tier: str
    transfers: Rows = Field(description="rows of transfers")
    ledger_entries: Rows = Field(description="rows of ledger_entries")


class ExportChatMessage(Outgoing):
    id: str
    live_id: str
    body: str | None = Field(description="null once deleted")
    created_at: str
    deleted_at: str | None


class ExportRestriction(Outgoing):
    live_id: str
    kind: Literal["ban", "timeout"]
    until: str | None
    reason: str | None
    created_at: str


class ExportLiveChat(Outgoing):
    messages: list[ExportChatMessage]
    restrictions: list[ExportRestriction] = Field(description="bans and timeouts on them")


class ExportBlocks(Outgoing):
    blocked: Rows = Field(description="users they block: `user_id`, `created_at`")
    blocked_by: Rows = Field(description="users who block them: `user_id`, `created_at`")


class Export(Outgoing):
    """Every feature adds its sections (a key is present when its feature runs on the
    server); secrets are left out (link-code hashes, stream keys, push-device tokens)."""

    format: Literal["ours-export/1"]
    user_id: str
    exported_at: str = Field(description="ISO 8601")
    profile: ExportProfile
    # routing
    preferences: dict[str, Any] | None = Field(
        None, description="notification preferences, as GET /v1/me/preferences answers them"
    )
    notifications: Rows | None = Field(
        None, description="every notification, as GET /v1/me/notifications lists them"
    )
    devices: list[ExportDevice] | None = None
    deliveries: Rows | None = Field(
        None,
        description="the delivery log, as GET /v1/notifications/{id}/deliveries answers it",
    )
    audiences: list[str] | None = Field(
        None, description="the platform's audiences (recipient lists) they are a member of"
    )
    # activity
    activity: ExportActivity | None = None
    # media
    audio: ExportAudio | None = None
    media: ExportMedia | None = None
    # ledger
    hours: ExportHours | None = Field(None, description="the HOURS account")
    # messaging
    conversations: Rows | None = Field(
        None, description="their conversations, as `conversation:list` sends them"
    )
    messages: dict[str, Rows] | None = Field(
        None,
        description="by conversation id: every message they can read (decrypted), as"
        " `message:history` sends them, oldest first",
    )
    scheduled_notes: Rows | None = Field(None, description="notes they scheduled")
    reactions: Rows | None = Field(
        None,
        description="their reactions on messages: conversation_id, message_id, seq, emoji,"
        " created_at",
    )
    attachments: Rows | None = Field(
        None, description="attachments they uploaded: kind, type, size, name, state (not files)"
    )
    blocks: ExportBlocks | None = Field(None, description="blocks, both directions")
    mutes: Rows | None = Field(
        None, description="conversations they muted: `conversation_id`, `until`, `created_at`"
    )
    # livechat
    live_chat: ExportLiveChat | None = None
    # the core
    audit: Rows = Field(description="audit-log entries about them or by them")
    events: Rows = Field(description="events of the event log that name them (at most 10000)")
    events_truncated: bool = Field(description="true: there were more than 10000 events")


def _feature(request: web.Request) -> PrivacyFeature:
    return request.app[PRIVACY]


@operation(
    "Everything this server holds about the signed-in user, as one JSON document",
    Export,
    security=USER,
    example={
        "format": "ours-export/1",
        "user_id": "ana",
        "exported_at": "2025-01-05T18:00:00+00:00",
        "profile": {"presence": {"invisible": False, "last_seen": 1736100131.4}},
        "audit": [],
        "events": [],
        "events_truncated": False,
    },
)
async def export_me(request: web.Request) -> web.Response:
    """A download (`Content-Disposition: attachment`, `Cache-Control: no-store`); audited.
    Each feature contributes its sections: messages decrypted, notifications, preferences,
    the HOURS account, media, Telegram link, ..."""
    principal = require_user(request)
    feature = _feature(request)
    archive = await feature.exporter.export(principal.user_id)
    await request.app[NODE].audit.record(
        principal, "privacy.export", f"user:{principal.user_id}", None, {}
    )
    resp = envelope(request, archive)
    day = utcnow().date().isoformat()
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="ours-export-{principal.user_id}-{day}.json"'
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


ERASED_EXAMPLE = {
    "erased": True,
    "pseudonym": "erased:3f9c2a71d04be8c5a1f0",
    "rows": {"notifications": 12, "messages": 40, "telegram_links": 1, "redis keys": 3},
}


@operation(
    "Erase the signed-in user's account data (removed, or anonymized where it is others' too)",
    Erased,
    security=USER,
    body=EraseRequest,
    body_required=False,
    example=ERASED_EXAMPLE,
)
async def delete_me(request: web.Request) -> web.Response:
    """In one transaction; their sockets are closed (`account_deleted`), follow-up sweeps
    catch late writes. The audit entry names the pseudonym, never the id."""
    principal = require_user(request)
    reason = (await read_body(request, EraseRequest, required=False)).reason
    result = await _feature(request).eraser.erase(principal.user_id, principal, reason)
    return envelope(request, result)


def _admin(request: web.Request) -> Principal | str:
    """An API key (its id), or an admin's token."""
    caller = require_caller(request)
    if not isinstance(caller, str):
        require(caller, Action.ADMIN_WRITE)
    return caller


@operation(
    "Erase a user's account data (the platform's backend or an admin)",
    Erased,
    security=ADMIN,
    path=UserPath,
    body=EraseRequest,
    body_required=False,
    errors=(Code.FORBIDDEN,),
    example=ERASED_EXAMPLE,
)
async def delete_user(request: web.Request) -> web.Response:
    """As DELETE /v1/me, for any user id (one never seen is erased too: nothing is found)."""
    actor = _admin(request)
    user_id = path_params(request, UserPath).user_id
    reason = (await read_body(request, EraseRequest, required=False)).reason
    result: dict[str, Any] = await _feature(request).eraser.erase(user_id, actor, reason)
    return envelope(request, result)


def add_routes(app: web.Application, feature: PrivacyFeature) -> None:
    app[PRIVACY] = feature
    app.router.add_get("/v1/me/export", export_me)
    app.router.add_delete("/v1/me", delete_me)
    app.router.add_delete("/v1/admin/users/{user_id}", delete_user)
