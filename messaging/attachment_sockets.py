"""Socket handlers of /messages for attachments (`AttachmentHandlers`): an upload URL for a new
attachment, a signed URL for one you can see. Messages carry them through `message:send`
(messaging/sockets.py); the logic is messaging/attachments.py."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from messaging.attachments import URL_TTL_S, AttachmentCreated, AttachmentKind, AttachmentUrl
from messaging.service import Messaging
from server.auth import Principal
from server.errors import Code
from server.sockets import Namespace, handles


class CreateAttachmentReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: uuid.UUID
    kind: AttachmentKind
    content_type: Annotated[str, StringConstraints(min_length=3, max_length=100)] = Field(
        description="image: image/jpeg|png|webp|gif; voice: audio/mp4|aac|mpeg|ogg|webm;"
        " video: video/mp4|quicktime|webm"
    )
    size_bytes: Annotated[int, Field(ge=1, le=1024**3)] = Field(
        description="the file's size; image and voice at most 10 MB, video 100 MB"
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class AttachmentUrlReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attachment_id: uuid.UUID
    ttl: Annotated[int, Field(ge=60, le=86_400)] = Field(
        URL_TTL_S, description="seconds the signed URL stays valid"
    )


class AttachmentHandlers(Namespace):
    """The attachment events; `messaging` is handed in by the namespace."""

    messaging: Messaging

    @handles(
        "attachment:create",
        CreateAttachmentReq,
        ack=AttachmentCreated,
        errors=(Code.FORBIDDEN, Code.UNAVAILABLE, Code.RATE_LIMITED),
        example={
            "conversation_id": "<conversation_id>",
            "kind": "image",
            "content_type": "image/jpeg",
            "size_bytes": 481_233,
            "name": "beach.jpg",
        },
    )
    async def attachment_create(self, sid: str, p: Principal, req: CreateAttachmentReq) -> Any:
        """Start an attachment in a conversation of yours: a one-time upload URL (Cloudflare
        Images for an image, Stream for a voice note or a video)."""
        return await self.messaging.attachments.create(
            p.user_id,
            str(req.conversation_id),
            req.kind,
            req.content_type,
            req.size_bytes,
            req.name,
        )

    @handles(
        "attachment:url",
        AttachmentUrlReq,
        ack=AttachmentUrl,
        errors=(Code.FORBIDDEN, Code.UNAVAILABLE),
        example={"attachment_id": "<attachment_id>", "ttl": 3600},
    )
    async def attachment_url(self, sid: str, p: Principal, req: AttachmentUrlReq) -> Any:
        """A signed, expiring URL of an attachment in a message you can see (or one you
        uploaded and have not sent yet); `url` is null while it is still processing."""
        return await self.messaging.attachments.url(p.user_id, str(req.attachment_id), req.ttl)
