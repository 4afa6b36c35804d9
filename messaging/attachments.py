"""Attachments of messages: an image, a voice note or a short video, uploaded by the client
straight to Cloudflare with a one-time URL, then named by the message that carries it.

    attachment:create -> a row (pending) + the provider's one-time upload URL
    client POSTs the file there (multipart, field `file`)
    message:send {attachments: [id, ...]} -> the rows bound to the message (once, by the sender,
                                             in this conversation)
    attachment:url -> a signed, expiring URL for a member who can see the message

The provider is the media feature's: messaging reaches it through `AttachmentMedia`, which the
composition root (app.py) fills with `media.attachment_media.CloudflareAttachments` (Images for
images, Stream for voice and video). Provider state comes two ways: Stream's signed webhook
(the media feature hands it here, `provider_state`) and, while a row is still pending, a look
at the provider when a URL is asked for (Images sends no webhook).

Deleting at the provider is never done inline: the row goes in the caller's transaction (the
message's delete, the user's erasure) together with a durable `messaging.attachment_purge`
job per object, retried with backoff by the scheduler, so a provider outage delays the delete
and cannot lose it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import asyncpg
from pydantic import Field

from messaging.attachments_store import AttachmentsStore
from messaging.conversations import NS, require_member, room
from messaging.keys import ConversationKeys, open_message, seal_message
from messaging.store import MessagingStore
from server.clock import utcnow
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.fanout import Fanout
from server.personal_data import Erasure, plain
from server.rooms import user_room
from server.scheduler import Scheduler
from server.server_events import server_event

AttachmentKind = Literal["image", "voice", "video"]
AttachmentState = Literal["pending", "ready", "error"]

PURGE_JOB = "messaging.attachment_purge"
UNUSED_JOB = "messaging.attachment_unused"
MAX_PER_MESSAGE = 4
UPLOAD_URL_TTL = timedelta(hours=1)
UNUSED_TTL = timedelta(hours=24)  # an attachment in no message by then is deleted
URL_TTL_S = 3600

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class KindRule:
    """What one kind of attachment may be: content types, size, duration at the provider."""

    content_types: frozenset[str]
    max_bytes: int
    max_duration_s: int | None = None


RULES: dict[str, KindRule] = {
    # Cloudflare Images takes at most 10 MB; SVG is left out (script in an image)
    "image": KindRule(frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"}), 10 * MB),
    "voice": KindRule(
        frozenset({"audio/mp4", "audio/aac", "audio/mpeg", "audio/ogg", "audio/webm"}),
        10 * MB,
        300,
    ),
    "video": KindRule(frozenset({"video/mp4", "video/quicktime", "video/webm"}), 100 * MB, 180),
}


class AttachmentMedia(Protocol):
    """The media feature's side of attachments (Cloudflare), as messaging uses it."""

    async def create_upload(
        self, kind: str, *, uploader: str, max_duration_s: int | None, expires_at: datetime
    ) -> tuple[str, str]:
        """A one-time direct upload: (provider uid, upload URL); `unavailable` without the
        provider's settings."""
        ...

    async def state(self, kind: str, uid: str) -> tuple[str, str | None]:
        """What the provider says now: (pending | ready | error, playback URL if any)."""
        ...

    def signed_url(
        self, kind: str, uid: str, playback_url: str | None, ttl_s: int
    ) -> tuple[str, datetime]:
        """A signed URL of a ready object, valid for `ttl_s`: (url, expiry)."""
        ...

    async def delete(self, kind: str, uid: str) -> None:
        """Delete the object (already gone counts as deleted); raise when the provider fails."""
        ...


class MessageAttachment(Outgoing):
    """An attachment as a message carries it."""

    id: str
    kind: AttachmentKind
    content_type: str
    size_bytes: int = Field(description="as the uploader declared it")
    name: str | None = Field(description="the file name the uploader gave, if any")
    state: AttachmentState = Field(
        description="pending: uploaded or not, still processing; ready: attachment:url gives a"
        " URL; error: the provider could not process it"
    )


class AttachmentCreated(Outgoing):
    """The ack of `attachment:create`: where to upload the file, once."""

    attachment_id: str = Field(description="name it in `message:send`'s `attachments`")
    kind: AttachmentKind
    upload_url: str = Field(
        description="POST the file here once (multipart/form-data, field `file`)"
    )
    expires_at: str = Field(description="ISO 8601: the upload URL works until then")
    max_size_bytes: int
    max_duration_s: int | None = Field(description="voice and video: the longest accepted")


class AttachmentUrl(Outgoing):
    """The ack of `attachment:url`: a signed URL once the attachment is ready."""

    attachment_id: str
    kind: AttachmentKind
    state: AttachmentState
    url: str | None = Field(
        description="signed and expiring: an image's delivery URL, a voice note's or video's"
        " HLS manifest; null while pending or after an error"
    )
    expires_at: str | None = Field(description="ISO 8601: when the URL stops working")


class AttachmentUpdated(Outgoing):
    """An attachment's processing finished (ready or error)."""

    attachment_id: str
    conversation_id: str
    message_id: str | None = Field(description="null: not sent yet (told to the uploader only)")
    state: AttachmentState


ATTACHMENT_UPDATED = server_event(
    "attachment:updated",
    AttachmentUpdated,
    namespaces=(NS,),
    summary="An attachment is ready (ask `attachment:url`) or failed: to the conversation when"
    " it is in a message, else to its uploader's devices",
    example={
        "attachment_id": "<attachment_id>",
        "conversation_id": "<conversation_id>",
        "message_id": "<message_id>",
        "state": "ready",
    },
)


def check_upload(kind: str, content_type: str, size_bytes: int) -> KindRule:
    rule = RULES[kind]
    if content_type not in rule.content_types:
        allowed = ", ".join(sorted(rule.content_types))
        raise ApiError(
            Code.BAD_REQUEST, f"a {kind} attachment is one of {allowed}, not {content_type}"
        )
    if size_bytes > rule.max_bytes:
        raise ApiError(
            Code.BAD_REQUEST,
            f"a {kind} attachment is at most {rule.max_bytes // MB} MB ({rule.max_bytes} bytes)",
        )
    return rule


def _name_aad(att_id: str) -> str:
    return f"attachment:{att_id}"


@dataclass(eq=False)
class Attachments:
    store: AttachmentsStore
    messaging: MessagingStore
    keys: ConversationKeys
    media: AttachmentMedia
    scheduler: Scheduler
    fanout: Fanout

    async def create(
        self,
        user_id: str,
        conv_id: str,
        kind: str,
        content_type: str,
        size_bytes: int,
        name: str | None,
    ) -> dict[str, Any]:
        """A member's new attachment: the row (pending) and the provider's upload URL."""
        rule = check_upload(kind, content_type, size_bytes)
        await require_member(self.messaging, self.messaging.db, conv_id, user_id)
        expires = utcnow() + UPLOAD_URL_TTL
        uid, upload_url = await self.media.create_upload(
            kind, uploader=user_id, max_duration_s=rule.max_duration_s, expires_at=expires
        )
        att_id = str(uuid.uuid4())
        key = await self.keys.key(conv_id)
        await self.store.insert(
            att_id,
            conversation_id=conv_id,
            uploader_id=user_id,
            kind=kind,
            provider_uid=uid,
            content_type=content_type,
            size_bytes=size_bytes,
            name=seal_message(key, conv_id, _name_aad(att_id), name.encode()) if name else None,
            upload_expires_at=expires,
        )
        payload = {"attachment_id": att_id}
        await self.scheduler.schedule(
            UNUSED_JOB, f"{UNUSED_JOB}:{att_id}", utcnow() + UNUSED_TTL, payload
        )
        return {
            "attachment_id": att_id,
            "kind": kind,
            "upload_url": upload_url,
            "expires_at": expires.isoformat(),
            "max_size_bytes": rule.max_bytes,
            "max_duration_s": rule.max_duration_s,
        }

    async def attach(
        self,
        conn: asyncpg.Connection,
        key: bytes,
        user_id: str,
        conv_id: str,
        msg_id: str,
        ids: list[str],
    ) -> list[dict[str, Any]]:
        """In the message's transaction: bind the sender's attachments to it (each once)."""
        if len(ids) > MAX_PER_MESSAGE:
            raise ApiError(Code.BAD_REQUEST, f"at most {MAX_PER_MESSAGE} attachments a message")
        if len(set(ids)) != len(ids):
            raise ApiError(Code.BAD_REQUEST, "an attachment is named twice")
        rows = {str(r["id"]): r for r in await self.store.locked(conn, ids)}
        for att_id in ids:
            row = rows.get(att_id)
            if (
                row is None
                or row["uploader_id"] != user_id
                or str(row["conversation_id"]) != conv_id
            ):
                raise ApiError(
                    Code.FORBIDDEN,
                    f"attachment {att_id} is not one you created in this conversation",
                )
            if row["message_id"] is not None:
                raise ApiError(
                    Code.BAD_REQUEST, f"attachment {att_id} is already in another message"
                )
            if row["state"] == "error":
                raise ApiError(
                    Code.BAD_REQUEST, f"attachment {att_id} could not be processed; upload again"
                )
        await self.store.bind(conn, msg_id, ids)
        return [self.wire(key, conv_id, rows[i]) for i in ids]

    async def of_messages(
        self, conn: Any, key: bytes, conv_id: str, msg_ids: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """The attachments of these messages, by message id, in their order."""
        out: dict[str, list[dict[str, Any]]] = {}
        if msg_ids:
            for r in await self.store.of_messages(conn, msg_ids):
                out.setdefault(str(r["message_id"]), []).append(self.wire(key, conv_id, r))
        return out

    def wire(self, key: bytes, conv_id: str, row: Any) -> dict[str, Any]:
        att_id = str(row["id"])
        name = row["name"]
        return {
            "id": att_id,
            "kind": row["kind"],
            "content_type": row["content_type"],
            "size_bytes": row["size_bytes"],
            "name": None if name is None else open_message(key, conv_id, _name_aad(att_id), name),
            "state": row["state"],
        }

    async def url(self, user_id: str, att_id: str, ttl_s: int) -> dict[str, Any]:
        """A signed URL for a member who can see the attachment's message (before it is sent:
        its uploader only); `state` says why there is none yet."""
        row = await self.store.get(att_id)
        member = (
            None
            if row is None
            else await self.messaging.member(
                self.messaging.db, str(row["conversation_id"]), user_id
            )
        )
        if (
            row is None
            or member is None
            or (row["message_id"] is None and row["uploader_id"] != user_id)
            or (row["message_seq"] is not None and row["message_seq"] <= member["joined_seq"])
        ):
            raise ApiError(Code.FORBIDDEN, "this attachment is not in a message you can see")
        kind, uid = row["kind"], row["provider_uid"]
        state, playback = row["state"], row["playback_url"]
        if state == "pending":
            state, found = await self.media.state(kind, uid)
            if state != "pending":
                await self._record(uid, state, found)
            playback = found or playback
        out: dict[str, Any] = {"attachment_id": att_id, "kind": kind, "state": state}
        if state != "ready":
            return {**out, "url": None, "expires_at": None}
        url, expires = self.media.signed_url(kind, uid, playback, ttl_s)
        return {**out, "url": url, "expires_at": expires.isoformat()}

    async def provider_state(self, uid: str, state: str, playback_url: str | None) -> bool:
        """A provider webhook about `uid` (media/webhooks.py hands it here): True when it is an
        attachment's, whose state is then recorded."""
        if state not in ("ready", "error"):
            return await self.store.is_attachment(uid)
        return await self._record(uid, state, playback_url)

    async def _record(self, uid: str, state: str, playback_url: str | None) -> bool:
        """Store the provider's state; `attachment:updated` when it changed."""
        row = await self.store.set_state(self.store.db, uid, state, playback_url)
        if row is None:
            return False
        if row["old_state"] != row["state"]:
            conv_id = str(row["conversation_id"])
            msg_id = str(row["message_id"]) if row["message_id"] else None
            info = {
                "attachment_id": str(row["id"]),
                "conversation_id": conv_id,
                "message_id": msg_id,
                "state": row["state"],
            }
            to = room(conv_id) if msg_id else user_room(row["uploader_id"])
            await self.fanout.emit(ATTACHMENT_UPDATED, info, namespace=NS, room=to)
        return True

    # -- removal ------------------------------------------------------------------------------

    async def remove_of_message(self, conn: asyncpg.Connection, msg_id: str) -> int:
        """In the message's delete: its rows go, their objects' deletes are queued."""
        rows = await self.store.delete_of_message(conn, msg_id)
        await self._purge_later(conn, rows)
        return len(rows)

    async def expire_unused(self, payload: dict[str, Any]) -> None:
        """The `messaging.attachment_unused` job: an attachment still in no message a day after
        it was made is deleted (row now, object by a purge job)."""
        async with self.store.transaction() as conn:
            rows = await self.store.delete_unused(conn, str(payload["attachment_id"]))
            await self._purge_later(conn, rows)

    async def erase_user(self, e: Erasure) -> None:
        """Their attachments (and those left in conversations that are gone) and, queued in the
        same transaction, the deletes of the objects at the provider."""
        rows = await self.store.delete_of_user(e.conn, e.user_id)
        e.add("message_attachments", len(rows))
        await self._purge_later(e.conn, rows)

    async def _purge_later(self, conn: asyncpg.Connection, rows: list[Any]) -> None:
        for r in rows:
            uid = r["provider_uid"]
            payload = {"kind": r["kind"], "uid": uid}
            await self.scheduler.schedule(
                PURGE_JOB, f"{PURGE_JOB}:{uid}", utcnow(), payload, conn=conn
            )

    async def purge(self, payload: dict[str, Any]) -> None:
        """The `messaging.attachment_purge` job: delete one object at the provider (a failure
        raises, and the scheduler retries with backoff)."""
        await self.media.delete(str(payload["kind"]), str(payload["uid"]))

    async def export(self, user_id: str) -> list[dict[str, Any]]:
        """The attachments they uploaded: what they are, where, their state (not the files)."""
        out = []
        for r in await self.store.of_uploader(user_id):
            conv_id = str(r["conversation_id"])
            try:
                name = self.wire(await self.keys.key(conv_id), conv_id, r)["name"]
            except ApiError:  # the conversation is gone
                name = None
            out.append(
                {
                    **{
                        k: plain(r[k])
                        for k in (
                            "id",
                            "conversation_id",
                            "message_id",
                            "kind",
                            "content_type",
                            "size_bytes",
                            "state",
                            "created_at",
                            "ready_at",
                        )
                    },
                    "name": name,
                }
            )
        return out
