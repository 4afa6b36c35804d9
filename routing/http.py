"""HTTP routes of the router (thin: authenticate, validate, call the inbox service).

GET  /v1/me/preferences                    user JWT
PUT  /v1/me/preferences                    user JWT; any subset of the fields
GET  /v1/me/notifications                  user JWT; ?before=<id>&limit=<1-100>&unread=1
PUT  /v1/users/{user_id}/contact           API key or admin: email, phone, phone_verified
GET  /v1/notifications/{id}/deliveries     its owner, an admin, or an API key
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from routing.inbox import Inbox
from routing.preferences import ContactUpdate, PreferencesUpdate
from server.auth import Principal, Role
from server.errors import ApiError, Code, M, validate
from server.events import Id
from server.http_api import envelope, read_json, require_caller, require_user

INBOX = web.AppKey("routing.inbox", Inbox)


def _inbox(request: web.Request) -> Inbox:
    return request.app[INBOX]


def _validate(model: type[M], raw: Any) -> M:
    return validate(model, raw, object_only=True)


def _int(value: str | None, name: str, default: int | None, lo: int, hi: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(Code.BAD_REQUEST, f"{name} must be between {lo} and {hi}")
    return n


async def get_preferences(request: web.Request) -> web.Response:
    principal = require_user(request)
    return envelope(request, await _inbox(request).preferences(principal.user_id))


async def put_preferences(request: web.Request) -> web.Response:
    principal = require_user(request)
    update = _validate(PreferencesUpdate, await read_json(request))
    return envelope(request, await _inbox(request).set_preferences(principal.user_id, update))


async def list_notifications(request: web.Request) -> web.Response:
    principal = require_user(request)
    q = request.query
    before = _int(q.get("before"), "before", None, 1, 2**62)
    limit = _int(q.get("limit"), "limit", 20, 1, 100)
    assert limit is not None
    unread = q.get("unread", "") in ("1", "true")
    return envelope(request, await _inbox(request).page(principal.user_id, before, limit, unread))


async def put_contact(request: web.Request) -> web.Response:
    _api_key_or_admin(request)
    user_id = request.match_info["user_id"]
    try:
        _validate_id(user_id)
    except ValidationError:
        raise ApiError(Code.BAD_REQUEST, "user_id is not an id") from None
    update = _validate(ContactUpdate, await read_json(request))
    return envelope(request, await _inbox(request).set_preferences(user_id, update))


async def deliveries(request: web.Request) -> web.Response:
    notification_id = _int(request.match_info["id"], "id", None, 1, 2**62)
    assert notification_id is not None
    principal = _api_key_or_admin(request, allow_user=True)
    return envelope(request, await _inbox(request).deliveries(principal, notification_id))


class _IdModel(BaseModel):
    id: Id


def _validate_id(value: str) -> None:
    _IdModel.model_validate({"id": value})


def _api_key_or_admin(request: web.Request, *, allow_user: bool = False) -> Principal:
    """An API key acts as an admin; otherwise the user's token (admins, or any user when
    `allow_user`, whose access is then checked against ownership)."""
    caller = require_caller(request)
    if isinstance(caller, str):
        return Principal(user_id=f"apikey:{caller}", role=Role.ADMIN)
    if not allow_user and caller.role is not Role.ADMIN:
        raise ApiError(Code.FORBIDDEN, "admins only")
    return caller


def add_routes(app: web.Application, inbox: Inbox) -> None:
    app[INBOX] = inbox
    app.router.add_get("/v1/me/preferences", get_preferences)
    app.router.add_put("/v1/me/preferences", put_preferences)
    app.router.add_get("/v1/me/notifications", list_notifications)
    app.router.add_put("/v1/users/{user_id}/contact", put_contact)
    app.router.add_get("/v1/notifications/{id}/deliveries", deliveries)
