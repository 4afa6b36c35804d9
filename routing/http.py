"""HTTP routes of the router (thin: authenticate, validate, call the inbox service).

GET  /v1/me/preferences                    user JWT
PUT  /v1/me/preferences                    user JWT; any subset of the fields
GET  /v1/me/notifications                  user JWT; ?before=<id>&limit=<1-100>&unread=1
PUT  /v1/users/{user_id}/contact           API key or admin: email, phone, phone_verified
GET  /v1/notifications/{id}/deliveries     its owner, an admin, or an API key
PATCH  /v1/audiences/{audience_id}/members API key or admin: add / remove members (pages)
GET    /v1/audiences/{audience_id}         API key or admin: its size
GET    /v1/audiences/{audience_id}/members API key or admin: ?after=<user id>&limit=<n>
DELETE /v1/audiences/{audience_id}         API key or admin
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from routing.audiences import (
    MAX_PAGE,
    AudienceChanged,
    AudienceDeleted,
    AudienceInfo,
    AudiencePage,
    Audiences,
    MembersChange,
)
from routing.inbox import Deliveries, Inbox, InboxPage
from routing.preferences import ContactUpdate, Preferences, PreferencesUpdate
from server.auth import Principal, Role
from server.errors import ApiError, Code
from server.events import Id
from server.http_api import (
    ADMIN,
    USER,
    Query,
    envelope,
    path_params,
    query,
    read_body,
    require_caller,
    require_user,
)
from server.openapi import operation

INBOX = web.AppKey("routing.inbox", Inbox)
AUDIENCES = web.AppKey("routing.audiences", Audiences)

NotificationId = Annotated[int, Field(ge=1, le=2**62)]

PREFERENCES_EXAMPLE = {
    "level": "all",
    "types": {"tip": True, "like": True, "follow": True},
    "channels": {"in_app": True, "push": True, "email": True, "sms": True, "telegram": True},
    "quiet_hours": {"enabled": True, "start": "23:00", "end": "08:00"},
    "timezone": "Europe/Berlin",
    "digest": "weekly",
    "digest_time": "09:00",
    "digest_day": "sun",
    "critical_breaks_quiet": False,
    "email": "ana@example.com",
    "phone": None,
    "phone_verified": False,
}


class NotificationsQuery(Query):
    before: NotificationId | None = Field(
        None, description="page: notifications older than this id (`next` of the last page)"
    )
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    unread: bool = Field(False, description="only the unread ones (1/true)")


class UserPath(BaseModel):
    user_id: Id


class NotificationPath(BaseModel):
    id: NotificationId


def _inbox(request: web.Request) -> Inbox:
    return request.app[INBOX]


@operation(
    "The signed-in user's notification preferences, every type and channel spelled out",
    Preferences,
    security=USER,
    example=PREFERENCES_EXAMPLE,
)
async def get_preferences(request: web.Request) -> web.Response:
    principal = require_user(request)
    return envelope(request, await _inbox(request).preferences(principal.user_id))


@operation(
    "Change the signed-in user's notification preferences (any subset of the fields)",
    Preferences,
    security=USER,
    body=PreferencesUpdate,
    example=PREFERENCES_EXAMPLE,
)
async def put_preferences(request: web.Request) -> web.Response:
    """Omitted fields keep their value; `types` and `channels` merge key by key; "" removes
    the email or phone. Changing the phone clears `phone_verified`. Answers the whole
    preferences document."""
    principal = require_user(request)
    update = await read_body(request, PreferencesUpdate)
    return envelope(request, await _inbox(request).set_preferences(principal.user_id, update))


@operation(
    "A page of the signed-in user's in-app notifications, newest first",
    InboxPage,
    security=USER,
    query=NotificationsQuery,
    example={
        "items": [
            {
                "id": 42,
                "kind": "tip",
                "priority": "immediate",
                "title": "New tip",
                "body": "bo tipped you 5.0 HRS",
                "data": {"event_id": "0193e1c2-7a4f-7c1e-9b1a-2f3d4e5f6a7b", "amount": 5},
                "actors": ["u_bob"],
                "actor_count": 1,
                "event_count": 1,
                "created_at": "2025-01-05T18:00:00+00:00",
                "updated_at": "2025-01-05T18:00:00+00:00",
                "read": False,
            }
        ],
        "next": None,
        "unread": 1,
    },
)
async def list_notifications(request: web.Request) -> web.Response:
    """`next` is the `before` of the next (older) page, null on the last one."""
    principal = require_user(request)
    q = query(request, NotificationsQuery)
    page = await _inbox(request).page(principal.user_id, q.before, q.limit, q.unread)
    return envelope(request, page)


@operation(
    "Set a user's contact data as the platform verified it (email, phone, phone_verified)",
    Preferences,
    security=ADMIN,
    path=UserPath,
    body=ContactUpdate,
    errors=(Code.FORBIDDEN,),
    example={**PREFERENCES_EXAMPLE, "phone": "+4915112345678", "phone_verified": True},
)
async def put_contact(request: web.Request) -> web.Response:
    """For the platform's backend (an API key) or an admin. `phone_verified` stays false
    without a phone. Answers the user's whole preferences document."""
    _api_key_or_admin(request)
    user_id = path_params(request, UserPath).user_id
    update = await read_body(request, ContactUpdate)
    return envelope(request, await _inbox(request).set_preferences(user_id, update))


@operation(
    "The delivery log of one notification: what became of it on each channel, and why",
    Deliveries,
    security=("apiKey", "userJwt"),
    path=NotificationPath,
    errors=(Code.NOT_FOUND,),
    example={
        "notification_id": 42,
        "user_id": "ana",
        "deliveries": [
            {
                "id": 7,
                "event_id": "0193e1c2-7a4f-7c1e-9b1a-2f3d4e5f6a7b",
                "user_id": "ana",
                "channel": "sms",
                "priority": "immediate",
                "state": "skipped",
                "reason": "quiet_hours",
                "detail": "quiet hours 23:00-08:00 (Europe/Berlin)",
                "attempts": 0,
                "not_before": None,
                "provider_id": None,
                "created_at": "2025-01-05T23:10:00+00:00",
                "updated_at": "2025-01-05T23:10:00+00:00",
                "sent_at": None,
            }
        ],
    },
)
async def deliveries(request: web.Request) -> web.Response:
    """For the notification's recipient, an admin, or the platform's backend (an API key);
    anyone else gets `not_found`."""
    notification_id = path_params(request, NotificationPath).id
    principal = _api_key_or_admin(request, allow_user=True)
    return envelope(request, await _inbox(request).deliveries(principal, notification_id))


class AudiencePath(BaseModel):
    audience_id: Id


class AudienceMembersQuery(Query):
    after: Id | None = Field(None, description="page: members after this user id (`next`)")
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 1000


@operation(
    "Add members to an audience and remove others (created on first use); at most 450"
    " ids each per request",
    AudienceChanged,
    security=ADMIN,
    path=AudiencePath,
    body=MembersChange,
    errors=(Code.FORBIDDEN,),
    example={"audience_id": "followers-u_alice", "added": 2, "removed": 1, "members": 41},
)
async def patch_audience_members(request: web.Request) -> web.Response:
    """For the platform's backend (an API key) or an admin. Removals apply first; ids already
    in (or not in) the audience change nothing, so a retried request is harmless. Name the
    audience in an event (`"audience": "<audience_id>"` in POST /v1/events) to notify every
    member with one event."""
    _api_key_or_admin(request)
    audience_id = path_params(request, AudiencePath).audience_id
    change = await read_body(request, MembersChange)
    return envelope(request, await request.app[AUDIENCES].change(audience_id, change))


@operation(
    "An audience's size",
    AudienceInfo,
    security=ADMIN,
    path=AudiencePath,
    errors=(Code.FORBIDDEN, Code.NOT_FOUND),
    example={"audience_id": "followers-u_alice", "members": 41},
)
async def get_audience(request: web.Request) -> web.Response:
    _api_key_or_admin(request)
    audience_id = path_params(request, AudiencePath).audience_id
    return envelope(request, await request.app[AUDIENCES].info(audience_id))


@operation(
    "A page of an audience's members, in user-id order",
    AudiencePage,
    security=ADMIN,
    path=AudiencePath,
    query=AudienceMembersQuery,
    errors=(Code.FORBIDDEN, Code.NOT_FOUND),
    example={"audience_id": "followers-u_alice", "members": ["u_bob", "u_cy"], "next": None},
)
async def get_audience_members(request: web.Request) -> web.Response:
    """`next` is the `after` of the next page, null on the last one."""
    _api_key_or_admin(request)
    audience_id = path_params(request, AudiencePath).audience_id
    q = query(request, AudienceMembersQuery)
    page = await request.app[AUDIENCES].page(audience_id, q.after or "", q.limit)
    return envelope(request, page)


@operation(
    "Delete an audience and its member list",
    AudienceDeleted,
    security=ADMIN,
    path=AudiencePath,
    errors=(Code.FORBIDDEN,),
    example={"deleted": True},
)
async def delete_audience(request: web.Request) -> web.Response:
    """Events that name it afterwards notify nobody through it (their listed recipients are
    still notified)."""
    _api_key_or_admin(request)
    audience_id = path_params(request, AudiencePath).audience_id
    return envelope(request, await request.app[AUDIENCES].delete(audience_id))


def _api_key_or_admin(request: web.Request, *, allow_user: bool = False) -> Principal:
    """An API key acts as an admin; otherwise the user's token (admins, or any user when
    `allow_user`, whose access is then checked against ownership)."""
    caller = require_caller(request)
    if isinstance(caller, str):
        return Principal(user_id=f"apikey:{caller}", role=Role.ADMIN)
    if not allow_user and caller.role is not Role.ADMIN:
        raise ApiError(Code.FORBIDDEN, "admins only")
    return caller


def add_routes(app: web.Application, inbox: Inbox, audiences: Audiences) -> None:
    app[INBOX] = inbox
    app[AUDIENCES] = audiences
    app.router.add_get("/v1/me/preferences", get_preferences)
    app.router.add_put("/v1/me/preferences", put_preferences)
    app.router.add_get("/v1/me/notifications", list_notifications)
    app.router.add_put("/v1/users/{user_id}/contact", put_contact)
    app.router.add_get("/v1/notifications/{id}/deliveries", deliveries)
    app.router.add_patch("/v1/audiences/{audience_id}/members", patch_audience_members)
    app.router.add_get("/v1/audiences/{audience_id}", get_audience)
    app.router.add_get("/v1/audiences/{audience_id}/members", get_audience_members)
    app.router.add_delete("/v1/audiences/{audience_id}", delete_audience)
