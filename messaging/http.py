"""HTTP route of messaging: GET /v1/attachments/{attachment_id} — the signed URL of an
attachment, as `attachment:url` answers it on /messages, for clients that fetch over HTTP."""

from __future__ import annotations

import uuid
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from messaging.attachments import URL_TTL_S, Attachments, AttachmentUrl
from server.errors import Code
from server.http_api import USER, Query, envelope, path_params, query, require_user
from server.openapi import operation

#: the attachments service, for the route (set by `add_routes`)
ATTACHMENTS: web.AppKey[Attachments] = web.AppKey("messaging.attachments")


class AttachmentPath(BaseModel):
    attachment_id: uuid.UUID = Field(description="from `attachment:create` or a message")


class AttachmentQuery(Query):
    ttl: Annotated[int, Field(ge=60, le=86_400)] = Field(
        URL_TTL_S, description="seconds the signed URL stays valid"
    )


@operation(
    "A signed, expiring URL of a message attachment you can see",
    AttachmentUrl,
    security=USER,
    path=AttachmentPath,
    query=AttachmentQuery,
    errors=(Code.FORBIDDEN, Code.UNAVAILABLE),
    example={
        "attachment_id": "0b8e2a4c-5d2f-4f7a-9a57-2f1c7e0d9b11",
        "kind": "image",
        "state": "ready",
        "url": "https://imagedelivery.net/Vi7wi5KSItxGFsWRG2Us6Q/"
        "2cdc28f0-017a-49c4-9ed7-870566c83901/public?exp=1736103600&sig=8f3c…",
        "expires_at": "2025-01-05T19:00:00+00:00",
    },
)
async def get_attachment(request: web.Request) -> web.Response:
    """For a member who can see the attachment's message (before it is sent: its uploader);
    `forbidden` otherwise. `url` is null while `state` is `pending` (see docs/protocol.md,
    Attachments)."""
    principal = require_user(request)
    att_id = str(path_params(request, AttachmentPath).attachment_id)
    ttl = query(request, AttachmentQuery).ttl
    data = await request.app[ATTACHMENTS].url(principal.user_id, att_id, ttl)
    resp = envelope(request, data)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def add_routes(app: web.Application, attachments: Attachments) -> None:
    app[ATTACHMENTS] = attachments
    app.router.add_get("/v1/attachments/{attachment_id}", get_attachment)
