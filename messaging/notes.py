"""Scheduled notes: a body sealed now and posted into its conversation at `deliver_at` by the
durable `message.scheduled` job (server/scheduler.py), once, even across restarts (the note's
state row guards against a repeat); if the sender is no longer a member by then, the note is
cancelled, and so is a note into a direct conversation with a block between its two
(messaging/blocks.py). The sender follows each recipient's state: sent, delivered, read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from messaging.conversations import require_member
from messaging.keys import ConversationKeys, note_aad
from messaging.messages import Messages, wire
from messaging.notes_store import NotesStore, job_key
from messaging.store import MessagingStore
from server.clock import utcnow
from server.contract import Outgoing
from server.crypto import seal, unseal
from server.errors import ApiError, Code
from server.scheduler import Scheduler

JOB = "message.scheduled"

NoteState = Literal["scheduled", "sent", "cancelled"]


class RecipientState(Outgoing):
    user_id: str
    state: Literal["scheduled", "sent", "delivered", "read", "cancelled"] = Field(
        description="the note's state until it is sent; then sent, delivered or read for this"
        " recipient"
    )


class ScheduledNote(Outgoing):
    """A scheduled note (`message:schedule`, `message:scheduled`)."""

    id: str = Field(description="the note's id (for `message:cancel`)")
    conversation_id: str
    deliver_at: str = Field(description="when it is posted (ISO 8601)")
    state: NoteState
    message_id: str | None = Field(description="the message it became, once sent")
    seq: int | None = Field(description="that message's seq, once sent")
    recipients: list[RecipientState] = Field(
        description="each other member's state (empty in the ack of `message:schedule`)"
    )


class NoteCancelled(Outgoing):
    """The ack of `message:cancel`."""

    id: str
    state: Literal["cancelled"]


@dataclass(eq=False)
class Notes:
    store: MessagingStore
    notes: NotesStore
    keys: ConversationKeys
    messages: Messages
    scheduler: Scheduler

    async def schedule(
        self, user_id: str, conv_id: str, body: str, deliver_at: datetime
    ) -> dict[str, Any]:
        if deliver_at <= utcnow() - timedelta(seconds=5):
            raise ApiError(Code.BAD_REQUEST, "deliver_at is in the past")
        note_id = str(uuid.uuid4())
        async with self.store.transaction() as conn:
            await require_member(self.store, conn, conv_id, user_id)
            await self.messages.blocks.refuse_direct(conn, conv_id, user_id)
            key = await self.keys.key(conv_id, conn)
            sealed = seal(key, body.encode(), note_aad(conv_id, note_id))
            row = await self.notes.insert(conn, note_id, conv_id, user_id, sealed, deliver_at)
            await self.scheduler.schedule(
                JOB, job_key(note_id), deliver_at, {"id": note_id}, conn=conn
            )
        return _note(row, None)

    async def deliver(self, payload: dict[str, Any]) -> None:
        """The job: send a due note once (the state row guards against repeats)."""
        note_id = payload["id"]
        async with self.store.transaction() as conn:
            note = await self.notes.note(conn, note_id, lock=True)
            if note is None or note["state"] != "scheduled":
                return
            conv_id = str(note["conversation_id"])
            sender = note["sender_id"]
            if await self.store.member(conn, conv_id, sender) is None or (
                await self.messages.blocks.in_direct(conn, conv_id, sender)
            ):  # gone, or a block came between the two of a direct conversation
                await self.notes.set_state(conn, note_id, "cancelled")
                return
            key = await self.keys.key(conv_id, conn)
            body = unseal(key, note["body"], note_aad(conv_id, note_id))
            msg_id = str(uuid.uuid4())
            row = await self.messages.post(
                conn, key, conv_id, msg_id, note["sender_id"], job_key(note_id), "note", body
            )
            await self.notes.set_state(conn, note_id, "sent", msg_id, row["seq"])
            members = await self.store.member_ids(conn, conv_id)
        await self.messages.announce(wire(key, conv_id, row), members, None)

    async def of_sender(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's notes, latest `deliver_at` first, with each recipient's state."""
        rows = await self.notes.of_sender(user_id, limit)
        return [_note(r, r["recipients"]) for r in rows]

    async def cancel(self, user_id: str, note_id: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            note = await self.notes.note(conn, note_id, lock=True)
            if note is None or note["sender_id"] != user_id:
                raise ApiError(Code.NOT_FOUND, "no such scheduled message")
            if note["state"] != "scheduled":
                raise ApiError(Code.CONFLICT, f"already {note['state']}")
            await self.notes.set_state(conn, note_id, "cancelled")
            await self.scheduler.cancel(job_key(note_id), conn=conn)
        return {"id": note_id, "state": "cancelled"}

    async def export(self, user_id: str) -> list[dict[str, Any]]:
        """The user's notes as `of_sender` lists them, each with its body and creation time."""
        listed = await self.of_sender(user_id, 100_000)
        rows = await self.notes.bodies([n["id"] for n in listed])
        out = []
        for note in listed:
            row, conv_id = rows[note["id"]], note["conversation_id"]
            key = await self.keys.key(conv_id)
            body = unseal(key, row["body"], note_aad(conv_id, note["id"])).decode()
            out.append({**note, "body": body, "created_at": row["created_at"].isoformat()})
        return out


def _note(row: Any, recipients: list[dict[str, Any]] | None) -> dict[str, Any]:
    status = []
    for r in recipients or []:
        if row["state"] != "sent":
            state = row["state"]
        elif r["read_seq"] >= row["seq"]:
            state = "read"
        elif r["delivered_seq"] >= row["seq"]:
            state = "delivered"
        else:
            state = "sent"
        status.append({"user_id": r["user_id"], "state": state})
    return {
        "id": str(row["id"]),
        "conversation_id": str(row["conversation_id"]),
        "deliver_at": row["deliver_at"].isoformat(),
        "state": row["state"],
        "message_id": str(row["message_id"]) if row["message_id"] else None,
        "seq": row["seq"],
        "recipients": status,
    }
