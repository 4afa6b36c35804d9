"""Messages of a conversation: each has a gap-free `seq` (taken under the conversation's row
lock), a body sealed with the conversation's key (messaging/keys.py), and is posted once per
sender and `client_msg_id`: a retry answers with the first message (`duplicate: true`) and posts
nothing. History is visible to a member from when they joined. Tips (messaging/tips.py) and
scheduled notes (messaging/notes.py) are messages too, posted and announced the same way.
A direct conversation with a block between its two (messaging/blocks.py) takes no posts or
edits; `message.sent` names who muted the conversation (messaging/mutes.py) and who the
message mentions (messaging/mentions.py, also published as `message.mentioned`). Posts, edits
and deletes keep the search index (`MessageIndex`, messaging/search.py) in step, in their
transaction.

`message:send` is written in micro-batches (group commit, messaging/group_commit.py): the
sends that arrive while the previous batch is being written share one transaction, with one
multi-row statement each for the rows, the index, the new `last_seq`s and (after the commit)
the `message.sent` events. Inside a batch every send keeps what a lone send has: its checks and
its own error, its seq in arrival order, its idempotency (a retry in the same batch answers the
first), and `message:new` to the others before its ack. Where the time went before (py-spy at
300 msg/s): about ten round trips and two commits per message (its transaction, then its
`message.sent` in the event log), the search index a tenth of the process on its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NotRequired, Protocol, TypedDict

import asyncpg
from pydantic import Field

from messaging.attachments import Attachments, MessageAttachment
from messaging.blocks import BLOCKED, Blocks
from messaging.conversations import MAX_MEMBERS, NS, MessageKind, require_member, room
from messaging.extras import MessageExtras, QuotedMessage
from messaging.group_commit import GroupCommit
from messaging.keys import ConversationKeys, open_message, seal_message
from messaging.mentions import Mentions
from messaging.mutes import Mutes
from messaging.store import MessagingStore, NewMessage
from server.bus import Bus
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.events import build_event
from server.fanout import Fanout
from server.server_events import server_event


class Posted(TypedDict):
    """The ack of a post: the message's id, seq and time; `duplicate` on a retry."""

    id: str
    seq: int
    ts: str
    duplicate: NotRequired[bool]


class MessagePosted(Outgoing):
    """The ack of `message:send`: the message's id, seq and time (`Posted`)."""

    id: str
    seq: int = Field(description="the message's number in its conversation (1, 2, 3, ...)")
    ts: str = Field(description="when it was posted (ISO 8601)")
    duplicate: bool | None = Field(
        None, description="true on a retry: the message this client_msg_id posted first"
    )


class Message(Outgoing):
    """A message as clients see it (`message:new`, `message:updated`, history)."""

    id: str
    conversation_id: str
    seq: int = Field(description="the message's number in its conversation (1, 2, 3, ...)")
    sender_id: str
    kind: MessageKind = Field(description="text, tip (with `amount`) or a delivered note")
    body: str | None = Field(description="null once deleted")
    reply_to: str | None = Field(description="the id of the message it answers")
    ts: str = Field(description="when it was posted (ISO 8601)")
    edited: bool
    deleted: bool
    amount: float | None = Field(None, description="a tip's HOURS (only on tips)")
    reactions: dict[str, int] | None = Field(
        None, description="emoji → how many members reacted with it (only when any did)"
    )
    my_reactions: list[str] | None = Field(
        None, description="in history: the emoji you reacted with (only when it has reactions)"
    )
    reply: QuotedMessage | None = Field(
        None, description="on a reply: the message it answers, as it is now"
    )
    attachments: list[MessageAttachment] | None = Field(
        None, description="images, voice notes, videos (only on messages that have them)"
    )


class MessageDeleted(Outgoing):
    """A tombstoned message: its body is gone, its seq stays."""

    conversation_id: str
    id: str
    seq: int


class MessagePage(Outgoing):
    """The ack of `message:history`: a page of messages, newest first."""

    messages: list[Message]
    next_before_seq: int | None = Field(
        description="pass it as `before_seq` for the page before; null when this page is not"
        " full (no more)"
    )


EXAMPLE_MESSAGE = {
    "id": "<message_id>",
    "conversation_id": "<conversation_id>",
    "seq": 7,
    "sender_id": "u_bob",
    "kind": "text",
    "body": "see you at eight",
    "reply_to": None,
    "ts": "2025-05-01T18:02:11.417000+00:00",
    "edited": False,
    "deleted": False,
}

MESSAGE_NEW = server_event(
    "message:new",
    Message,
    namespaces=(NS,),
    summary="A new message in one of your conversations (texts, tips, delivered notes); not"
    " sent back to the socket that sent it",
    example=EXAMPLE_MESSAGE,
)
MESSAGE_UPDATED = server_event(
    "message:updated",
    Message,
    namespaces=(NS,),
    summary="A message was edited by its sender: the message as it is now",
    example={**EXAMPLE_MESSAGE, "body": "see you at nine", "edited": True},
)
MESSAGE_DELETED = server_event(
    "message:deleted",
    MessageDeleted,
    namespaces=(NS,),
    summary="A message was deleted by its sender (its seq stays, its body is gone)",
    example={"conversation_id": "<conversation_id>", "id": "<message_id>", "seq": 7},
)


def posted(row: Any, *, duplicate: bool = False) -> Posted:
    out = Posted(id=str(row["id"]), seq=row["seq"], ts=row["created_at"].isoformat())
    if duplicate:
        out["duplicate"] = True
    return out


def wire(
    key: bytes, conv_id: str, row: Any, attachments: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A message row as clients see it (`message:new`, `message:updated`, history)."""
    msg_id = str(row["id"])
    out = {
        "id": msg_id,
        "conversation_id": conv_id,
        "seq": row["seq"],
        "sender_id": row["sender_id"],
        "kind": row["kind"],
        "body": None if row["body"] is None else open_message(key, conv_id, msg_id, row["body"]),
        "reply_to": str(row["reply_to"]) if row["reply_to"] else None,
        "ts": row["created_at"].isoformat(),
        "edited": row["edited_at"] is not None,
        "deleted": row["deleted_at"] is not None,
    }
    if row["tip_amount"] is not None:
        out["amount"] = float(row["tip_amount"])
    if attachments and row["deleted_at"] is None:
        out["attachments"] = attachments
    return out


class MessageIndex(Protocol):
    """What posting, editing and deleting keep in step, in the same transaction (the search
    index: messaging/search.py `SearchIndex`)."""

    async def add(self, conn: asyncpg.Connection, conv_id: str, seq: int, body: bytes) -> None: ...

    async def replace(
        self, conn: asyncpg.Connection, conv_id: str, seq: int, body: bytes
    ) -> None: ...

    async def add_many(
        self, conn: asyncpg.Connection, items: list[tuple[str, int, bytes]]
    ) -> None: ...

    async def drop(self, conn: asyncpg.Connection, conv_id: str, seq: int) -> None: ...


#: sends written in one transaction at most (the rest wait for the next batch)
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Send:
    """One `message:send`, as the batch writer takes it."""

    user_id: str
    conv_id: str
    client_msg_id: str
    body: str
    reply_to: str | None
    skip_sid: str | None
    attachment_ids: list[str]


@dataclass(eq=False)
class Messages:
    store: MessagingStore
    keys: ConversationKeys
    fanout: Fanout
    bus: Bus
    extras: MessageExtras
    attachments: Attachments
    blocks: Blocks
    mutes: Mutes
    mentions: Mentions
    index: MessageIndex | None = None

    def __post_init__(self) -> None:
        self._sends: GroupCommit[Send, Posted] = GroupCommit(self._send_batch, MAX_BATCH)

    async def send(
        self,
        user_id: str,
        conv_id: str,
        client_msg_id: str,
        body: str,
        reply_to: str | None,
        skip_sid: str | None,
        attachment_ids: list[str] | None = None,
    ) -> Posted:
        """Post a text message (with the sender's attachments), or answer with the one this
        `client_msg_id` already posted. Sends that arrive together are written together
        (`_send_batch`)."""
        return await self._sends.submit(
            Send(user_id, conv_id, client_msg_id, body, reply_to, skip_sid, attachment_ids or [])
        )

    async def _send_batch(self, sends: list[Send]) -> list[Posted | ApiError]:
        """Post a batch of sends in one transaction: the conversations locked (in id order),
        then per send, in arrival order, the checks a lone send makes (a member; an earlier
        post of its `client_msg_id`; no block in a direct conversation; `reply_to` in the
        conversation; its attachments), each failing that send alone; seqs taken in arrival
        order, gap-free (a send whose attachments are refused takes none); the rows, the
        search index and the new `last_seq`s written with one statement each. After the
        commit, each message is announced in order, and only then answered."""
        answers: list[Posted | ApiError | None] = [None] * len(sends)
        first: dict[tuple[str, str, str], int] = {}
        again: dict[int, int] = {}  # a retry inside the batch -> the send it repeats
        for i, s in enumerate(sends):
            k = (s.conv_id, s.user_id, s.client_msg_id)
            if k in first:
                again[i] = first[k]
            else:
                first[k] = i
        leads = list(first.values())
        conv_ids = sorted({s.conv_id for s in sends})
        posts: list[tuple[int, asyncpg.Record, bytes, list[dict[str, Any]] | None]] = []
        async with self.store.transaction() as conn:
            convs = await self.store.lock_conversations(conn, conv_ids)
            members = await self.store.members_of(conn, list(convs))
            earlier = await self.store.messages_by_client_ids(
                conn, [k for k, i in first.items() if sends[i].user_id in members.get(k[0], ())]
            )
            pairs = {
                (s.user_id, m)
                for i in leads
                if (s := sends[i]).conv_id in convs
                and convs[s.conv_id]["kind"] == "direct"
                and s.user_id in members.get(s.conv_id, ())
                for m in members[s.conv_id]
                if m != s.user_id
            }
            blocked = await self.blocks.blocked_pairs(conn, sorted(pairs))
            replied = await self.store.conversations_of_messages(
                conn, sorted({s.reply_to for i in leads if (s := sends[i]).reply_to})
            )
            last = {c: int(r["last_seq"]) for c, r in convs.items()}
            plain: list[tuple[int, NewMessage, bytes, bytes]] = []
            for i in leads:
                s = sends[i]
                try:
                    if s.user_id not in members.get(s.conv_id, ()):
                        raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
                    done = earlier.get((s.conv_id, s.user_id, s.client_msg_id))
                    if done is not None:
                        answers[i] = posted(done, duplicate=True)
                        continue
                    conv = convs[s.conv_id]
                    others = [m for m in members[s.conv_id] if m != s.user_id]
                    if conv["kind"] == "direct" and any((s.user_id, m) in blocked for m in others):
                        raise ApiError(Code.FORBIDDEN, BLOCKED)
                    if s.reply_to is not None and replied.get(s.reply_to) != s.conv_id:
                        raise ApiError(
                            Code.NOT_FOUND, "reply_to is not a message of this conversation"
                        )
                except ApiError as e:
                    answers[i] = e
                    continue
                key = self.keys.unwrap(s.conv_id, conv["wrapped_key"])
                msg_id = str(uuid.uuid4())
                if not s.attachment_ids:
                    last[s.conv_id] += 1
                    row = NewMessage(
                        msg_id,
                        s.conv_id,
                        last[s.conv_id],
                        s.user_id,
                        s.client_msg_id,
                        "text",
                        seal_message(key, s.conv_id, msg_id, s.body.encode()),
                        s.reply_to,
                    )
                    plain.append((i, row, key, s.body.encode()))
                    continue
                # attachments are checked where they are bound: after the row, in a savepoint
                # that takes the row (and its seq) back with a refusal. What came before it in
                # the batch is written first, so seqs follow arrival order.
                posts += await self._insert_plain(conn, plain)
                plain = []
                try:
                    async with conn.transaction():
                        row = await self.post(
                            conn,
                            key,
                            s.conv_id,
                            msg_id,
                            s.user_id,
                            s.client_msg_id,
                            "text",
                            s.body.encode(),
                            s.reply_to,
                            seq=last[s.conv_id] + 1,
                        )
                        files = await self.attachments.attach(
                            conn, key, s.user_id, s.conv_id, msg_id, s.attachment_ids
                        )
                except ApiError as e:
                    answers[i] = e
                    continue
                last[s.conv_id] += 1
                posts.append((i, row, key, files))
            posts += await self._insert_plain(conn, plain)
            await self.store.set_last_seqs(
                conn, {c: n for c, n in last.items() if n != convs[c]["last_seq"]}
            )
        messages = []
        for i, row, key, attached in posts:
            s = sends[i]
            message = wire(key, s.conv_id, row, attached)
            if s.reply_to is not None:
                await self.extras.add(s.conv_id, key, [message], reactions=False)
            messages.append((message, members[s.conv_id], s.skip_sid))
            answers[i] = posted(row)
        await self.announce_many(messages)
        for i, j in again.items():
            answer = answers[j]
            if isinstance(answer, dict):
                answer = Posted(id=answer["id"], seq=answer["seq"], ts=answer["ts"], duplicate=True)
            answers[i] = answer
        out = []
        for answer in answers:
            assert answer is not None
            out.append(answer)
        return out

    async def _insert_plain(
        self, conn: asyncpg.Connection, plain: list[tuple[int, NewMessage, bytes, bytes]]
    ) -> list[tuple[int, asyncpg.Record, bytes, list[dict[str, Any]] | None]]:
        """Write text messages without attachments (and their search index) at once."""
        if not plain:
            return []
        rows = await self.store.insert_messages(conn, [m for _, m, _, _ in plain])
        if self.index is not None:
            await self.index.add_many(
                conn, [(m.conversation_id, m.seq, body) for _, m, _, body in plain]
            )
        return [(i, row, key, None) for (i, _, key, _), row in zip(plain, rows, strict=True)]

    async def post(
        self,
        conn: asyncpg.Connection,
        key: bytes,
        conv_id: str,
        msg_id: str,
        sender_id: str,
        client_msg_id: str,
        kind: str,
        body: bytes,
        reply_to: str | None = None,
        tip_amount: Decimal | None = None,
        *,
        seq: int | None = None,
    ) -> asyncpg.Record:
        """In the caller's transaction: take the next seq (unless a batch took it: `seq`,
        its `last_seq` written by the batch), seal the body, insert the row."""
        if seq is None:
            seq = await self.store.next_seq(conn, conv_id)
        row = await self.store.insert_message(
            conn,
            msg_id,
            conv_id,
            seq,
            sender_id,
            client_msg_id,
            kind,
            seal_message(key, conv_id, msg_id, body),
            reply_to,
            tip_amount,
        )
        if self.index is not None:
            await self.index.add(conn, conv_id, seq, body)
        return row

    async def announce(
        self, message: dict[str, Any], members: list[str], skip_sid: str | None
    ) -> None:
        """After the commit: `message:new` to the conversation's room (but the sending socket),
        and `message.sent` on the bus for the notification router."""
        await self.announce_many([(message, members, skip_sid)])

    async def announce_many(
        self, posts: list[tuple[dict[str, Any], list[str], str | None]]
    ) -> None:
        """`announce` for a batch, in order: every `message:new` first, then the batch's
        `message.sent` (and `message.mentioned`) events in one publish."""
        if not posts:
            return
        for message, _, skip_sid in posts:
            conv_id = message["conversation_id"]
            await self.fanout.emit(
                MESSAGE_NEW, message, namespace=NS, room=room(conv_id), skip_sid=skip_sid
            )
        muted_in = await self.mutes.muted_in_many(
            sorted({m["conversation_id"] for m, _, _ in posts})
        )
        events = []
        for message, members, _ in posts:
            conv_id = message["conversation_id"]
            sender = message["sender_id"]
            recipients = [m for m in members if m != sender][:MAX_MEMBERS]
            muted = set(muted_in.get(conv_id, ()))
            mentioned = []
            if message["kind"] != "tip":
                mentioned = await self.mentions.of(conv_id, sender, message["body"], recipients)
            about = {
                "conversation_id": conv_id,
                "message_id": message["id"],
                "sender_id": sender,
                "seq": message["seq"],
            }
            sent: dict[str, Any] = {**about, "recipients": recipients}
            if muted:
                sent["muted"] = [m for m in recipients if m in muted]
            if mentioned:
                sent["mentioned"] = mentioned
            events.append(build_event({"type": "message.sent", "actor": sender, "payload": sent}))
            if mentioned:
                events.append(
                    build_event(
                        {
                            "type": "message.mentioned",
                            "actor": sender,
                            "payload": {**about, "mentioned": mentioned},
                        }
                    )
                )
        await self.bus.publish_many(events)

    async def history(
        self, user_id: str, conv_id: str, before_seq: int | None, limit: int
    ) -> dict[str, Any]:
        """A page of messages, newest first; `next_before_seq` pages further back."""
        m = await require_member(self.store, self.store.db, conv_id, user_id)
        rows = await self.store.history(conv_id, m["joined_seq"], before_seq, limit)
        key = await self.keys.key(conv_id)
        messages = await self.render(key, conv_id, rows, user_id)
        next_before = messages[-1]["seq"] if len(messages) == limit else None
        return {"messages": messages, "next_before_seq": next_before}

    async def render(
        self, key: bytes, conv_id: str, rows: list[asyncpg.Record], viewer: str
    ) -> list[dict[str, Any]]:
        """Message rows as `viewer` sees them in history and search: with their attachments,
        reaction counts (and the viewer's own) and the messages replies quote."""
        files = await self.attachments.of_messages(
            self.store.db, key, conv_id, [str(r["id"]) for r in rows]
        )
        messages = [wire(key, conv_id, r, files.get(str(r["id"]))) for r in rows]
        await self.extras.add(conv_id, key, messages, viewer=viewer)
        return messages

    async def edit(self, user_id: str, conv_id: str, msg_id: str, body: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            await require_member(self.store, conn, conv_id, user_id)
            row = await self._own_message(conn, conv_id, msg_id, user_id)
            await self.blocks.refuse_direct(conn, conv_id, user_id)
            if row["kind"] != "text":
                raise ApiError(Code.BAD_REQUEST, "only text messages can be edited")
            key = await self.keys.key(conv_id, conn)
            row = await self.store.update_body(
                conn, msg_id, seal_message(key, conv_id, msg_id, body.encode())
            )
            files = await self.attachments.of_messages(conn, key, conv_id, [msg_id])
            if self.index is not None:
                await self.index.replace(conn, conv_id, row["seq"], body.encode())
        message = wire(key, conv_id, row, files.get(msg_id))
        await self.extras.add(conv_id, key, [message])
        await self.fanout.emit(MESSAGE_UPDATED, message, namespace=NS, room=room(conv_id))
        return message

    async def delete(self, user_id: str, conv_id: str, msg_id: str) -> dict[str, Any]:
        """Tombstone a message: its body goes, its seq stays; its attachments go (their
        objects at the provider by a durable job)."""
        async with self.store.transaction() as conn:
            await require_member(self.store, conn, conv_id, user_id)
            await self._own_message(conn, conv_id, msg_id, user_id)
            row = await self.store.tombstone(conn, msg_id)
            await self.extras.forget(conn, msg_id)
            await self.attachments.remove_of_message(conn, msg_id)
            if self.index is not None:
                await self.index.drop(conn, conv_id, row["seq"])
        info = {"conversation_id": conv_id, "id": msg_id, "seq": row["seq"]}
        await self.fanout.emit(MESSAGE_DELETED, info, namespace=NS, room=room(conv_id))
        return info

    async def _own_message(
        self, conn: asyncpg.Connection, conv_id: str, msg_id: str, user_id: str
    ) -> asyncpg.Record:
        row = await self.store.message(conn, conv_id, msg_id, lock=True)
        if row is None or row["deleted_at"] is not None:
            raise ApiError(Code.NOT_FOUND, "no such message")
        if row["sender_id"] != user_id:
            raise ApiError(Code.FORBIDDEN, "only the sender can change a message")
        return row
