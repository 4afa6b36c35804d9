"""HTTP routes of a user's data (thin: authenticate, call the exporter or the eraser, audit).

GET    /v1/me/export              user JWT: everything of theirs as one JSON document
DELETE /v1/me                     user JWT: erase their account data; optional {reason}
DELETE /v1/admin/users/{user_id}  API key or admin JWT: erase a user; optional {reason}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.auth import SUB_RE, Principal
from server.clock import utcnow
from server.errors import ApiError, Code
from server.http_api import NODE, envelope, read_json, require_caller, require_user
from server.policy import Action, require

if TYPE_CHECKING:
    from privacy.feature import PrivacyFeature

MAX_REASON = 500


PRIVACY: web.AppKey[PrivacyFeature] = web.AppKey("privacy.feature")


def _feature(request: web.Request) -> PrivacyFeature:
    return request.app[PRIVACY]


async def _reason(request: web.Request) -> str | None:
    """An optional JSON body {"reason": "..."} (recorded in the audit log)."""
    if not request.can_read_body:
        return None
    raw = await read_json(request)
    if not isinstance(raw, dict) or set(raw) - {"reason"}:
        raise ApiError(Code.BAD_REQUEST, 'the body is optional: {"reason": "..."}')
    reason = raw.get("reason")
    if reason is not None and not (isinstance(reason, str) and len(reason) <= MAX_REASON):
        raise ApiError(Code.BAD_REQUEST, f"reason must be text of at most {MAX_REASON} characters")
    return reason


async def export_me(request: web.Request) -> web.Response:
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


async def delete_me(request: web.Request) -> web.Response:
    principal = require_user(request)
    reason = await _reason(request)
    result = await _feature(request).eraser.erase(principal.user_id, principal, reason)
    return envelope(request, result)


def _admin(request: web.Request) -> Principal | str:
    """An API key (its id), or an admin's token."""
    caller = require_caller(request)
    if not isinstance(caller, str):
        require(caller, Action.ADMIN_WRITE)
    return caller


async def delete_user(request: web.Request) -> web.Response:
    actor = _admin(request)
    user_id = request.match_info["user_id"]
    if not SUB_RE.match(user_id):
        raise ApiError(
            Code.BAD_REQUEST, "user_id is not a user id (1-64 of letters, digits, _ . -)"
        )
    reason = await _reason(request)
    result: dict[str, Any] = await _feature(request).eraser.erase(user_id, actor, reason)
    return envelope(request, result)


def add_routes(app: web.Application, feature: PrivacyFeature) -> None:
    app[PRIVACY] = feature
    app.router.add_get("/v1/me/export", export_me)
    app.router.add_delete("/v1/me", delete_me)
    app.router.add_delete("/v1/admin/users/{user_id}", delete_user)
