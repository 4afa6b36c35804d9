"""Conversations: direct ones (one per pair of users) and circles (at most `MAX_MEMBERS`, an
owner who adds and removes members). Members' sockets are in the `conversation:{id}` room on
/messages; joining and leaving move every socket of the user on every node at once."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import asyncpg
from pydantic import Field

from messaging.blocks import Blocks
from messaging.keys import ConversationKeys, open_message
from messaging.mutes import Mutes
from messaging.store import Conn, MessagingStore
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.fanout import Fanout
from server.server_events import server_event

NS = "/messages"
MAX_MEMBERS = 150

MessageKind = Literal["text", "tip", "note"]


class Conversation(Outgoing):
    """A conversation as `conversation:open` and `conversation:create` answer it."""

    id: str
    kind: Literal["direct", "group"] = Field(description="direct (two users) or group (a circle)")
    title: str | None = Field(description="a circle's title; null for a direct conversation")
    owner_id: str | None = Field(description="a circle's owner; null for a direct conversation")
    members: list[str] = Field(description="the members' user ids")


class LastMessage(Outgoing):
    """The newest message of a conversation the user can read (in `conversation:list`)."""

    id: str
    seq: int
    sender_id: str
    kind: MessageKind
    body: str | None = Field(description="null once deleted")
    ts: str = Field(description="when it was sent (ISO 8601)")
    amount: float | None = Field(None, description="a tip's HOURS (only on tips)")
    attachments: list[Literal["image", "voice", "video"]] | None = Field(
        None, description="the kinds of its attachments, in order (only when it has some)"
    )


class ListedConversation(Conversation):
    """A conversation in `conversation:list`: with its last message, unread count and the
    user's read cursor."""

    last_message: LastMessage | None = Field(description="null when there is none yet")
    unread: int = Field(description="messages of others after `read_seq`, not deleted")
    read_seq: int = Field(description="the seq up to which the user has read")
    muted: bool = Field(description="you muted it: no push/email/SMS/Telegram for its messages")


class ConversationMembers(Outgoing):
    """The ack of `conversation:add` and `conversation:remove`: the members after."""

    conversation_id: str
    members: list[str]


class ConversationLeft(Outgoing):
    conversation_id: str


class MembersChanged(Outgoing):
    """`conversation:members`: who is in the conversation now, and what changed (one of
    `added`, `removed`, `left`)."""

    conversation_id: str
    members: list[str]
    added: str | None = Field(None, description="the user the owner added")
    removed: str | None = Field(None, description="the user the owner removed")
    left: str | None = Field(None, description="the user who left")


class ConversationRemoved(Outgoing):
    """`conversation:removed`: the owner removed you from this circle."""

    conversation_id: str


CONVERSATION_MEMBERS = server_event(
    "conversation:members",
    MembersChanged,
    namespaces=(NS,),
    summary="A circle's members changed (added, removed, or one left): the members now",
    example={
        "conversation_id": "<conversation_id>",
        "members": ["u_alice", "u_bob", "u_dave"],
        "added": "u_dave",
    },
)
CONVERSATION_REMOVED = server_event(
    "conversation:removed",
    ConversationRemoved,
    namespaces=(NS,),
    summary="To the removed user's devices: the owner removed you from a circle (its room is"
    " left on every node)",
    example={"conversation_id": "<conversation_id>"},
)


def room(conv_id: str) -> str:
    return f"conversation:{conv_id}"


async def require_member(
    store: MessagingStore,
    conn: Conn,
    conv_id: str,
    user_id: str,
    *,
    lock_conversation: bool = False,
) -> asyncpg.Record:
    """The user's membership, or `forbidden` (see `MessagingStore.member` for the lock)."""
    m = await store.member(conn, conv_id, user_id, lock_conversation=lock_conversation)
    if m is None:
        raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
    return m


def _summary(row: Any, members: list[str]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "title": row["title"],
        "owner_id": row["owner_id"],
        "members": members,
    }


class Conversations:
    def __init__(
        self,
        store: MessagingStore,
        keys: ConversationKeys,
        fanout: Fanout,
        blocks: Blocks,
        mutes: Mutes,
    ) -> None:
        self.store = store
        self.keys = keys
        self.fanout = fanout
        self.blocks = blocks
        self.mutes = mutes

    async def rooms_for(self, user_id: str) -> list[str]:
        return [room(c) for c in await self.store.conversation_ids_of(user_id)]

    async def open_direct(self, user_id: str, other_id: str) -> dict[str, Any]:
        if other_id == user_id:
            raise ApiError(Code.BAD_REQUEST, "a conversation needs another user")
        await self.blocks.refuse_between(user_id, other_id)
        pair = "|".join(sorted((user_id, other_id)))
        row = await self.store.direct_by_pair(self.store.db, pair)
        if row is None:
            async with self.store.transaction() as conn:
                row = await self._create(conn, "direct", None, None, pair)
                if row is not None:
                    await self.store.add_members(
                        conn, str(row["id"]), [(user_id, "member"), (other_id, "member")]
                    )
            if row is None:  # created concurrently: the pair key is unique
                row = await self.store.direct_by_pair(self.store.db, pair)
            else:
                await self._join([user_id, other_id], str(row["id"]))
        assert row is not None
        return _summary(row, sorted((user_id, other_id)))

    async def create_group(self, owner: str, title: str, members: list[str]) -> dict[str, Any]:
        others = [m for m in dict.fromkeys(members) if m != owner]
        if len(others) + 1 > MAX_MEMBERS:
            raise ApiError(Code.FORBIDDEN, f"a circle has at most {MAX_MEMBERS} members")
        async with self.store.transaction() as conn:
            row = await self._create(conn, "group", title, owner, None)
            assert row is not None  # only a direct conversation's pair key can collide
            await self.store.add_members(
                conn, str(row["id"]), [(owner, "owner"), *((m, "member") for m in others)]
            )
        await self._join([owner, *others], str(row["id"]))
        return _summary(row, [owner, *others])

    async def add_member(self, actor: str, conv_id: str, user_id: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            conv = await self._owned_group(conn, actor, conv_id)
            if await self.store.member(conn, conv_id, user_id):
                raise ApiError(Code.CONFLICT, "already a member")
            if await self.store.member_count(conn, conv_id) >= MAX_MEMBERS:
                raise ApiError(Code.FORBIDDEN, f"a circle has at most {MAX_MEMBERS} members")
            await self.store.add_members(conn, conv_id, [(user_id, "member")], conv["last_seq"])
            members = await self.store.member_ids(conn, conv_id)
        await self._join([user_id], conv_id)
        await self._broadcast_members(conv_id, members, {"added": user_id})
        return {"conversation_id": conv_id, "members": members}

    async def remove_member(self, actor: str, conv_id: str, user_id: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            conv = await self._owned_group(conn, actor, conv_id)
            if user_id == conv["owner_id"]:
                raise ApiError(Code.BAD_REQUEST, "the owner leaves with conversation:leave")
            if not await self.store.remove_member(conn, conv_id, user_id):
                raise ApiError(Code.NOT_FOUND, "not a member")
            members = await self.store.member_ids(conn, conv_id)
        await self.fanout.leave_user(NS, user_id, room(conv_id))
        await self.fanout.emit(
            CONVERSATION_REMOVED,
            {"conversation_id": conv_id},
            namespace=NS,
            room=f"user:{user_id}",
        )
        await self._broadcast_members(conv_id, members, {"removed": user_id})
        return {"conversation_id": conv_id, "members": members}

    async def leave(self, user_id: str, conv_id: str) -> dict[str, Any]:
        async with self.store.transaction() as conn:
            conv = await self.store.conversation(conn, conv_id, lock=True)
            if conv is None:
                raise ApiError(Code.NOT_FOUND, "no such conversation")
            if conv["kind"] == "direct":
                raise ApiError(Code.BAD_REQUEST, "a direct conversation cannot be left")
            if not await self.store.remove_member(conn, conv_id, user_id):
                raise ApiError(Code.FORBIDDEN, "you are not a member of this conversation")
            members = await self.store.member_ids(conn, conv_id)
            if conv["owner_id"] == user_id and members:  # hand the circle on
                await self.store.hand_over(conn, conv_id, members[0])
        await self.fanout.leave_user(NS, user_id, room(conv_id))
        await self._broadcast_members(conv_id, members, {"left": user_id})
        return {"conversation_id": conv_id}

    async def list_for(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """The user's conversations, latest activity first, each with its last message (the
        user can read), unread count and read cursor."""
        out = []
        muted = await self.mutes.of_user(user_id)
        for r in await self.store.list_for_user(user_id, limit):
            conv_id = str(r["id"])
            last = None
            if r["last_id"] is not None:
                body = None
                if r["last_body"] is not None and r["last_deleted"] is None:
                    key = self.keys.unwrap(conv_id, r["wrapped_key"])
                    body = open_message(key, conv_id, str(r["last_id"]), r["last_body"])
                last = {
                    "id": str(r["last_id"]),
                    "seq": r["last_msg_seq"],
                    "sender_id": r["last_sender"],
                    "kind": r["last_kind"],
                    "body": body,
                    "ts": r["last_at"].isoformat(),
                }
                if r["last_tip"] is not None:
                    last["amount"] = float(r["last_tip"])
                if r["last_attachments"] and r["last_deleted"] is None:
                    last["attachments"] = list(r["last_attachments"])
            out.append(
                {
                    "id": conv_id,
                    "kind": r["kind"],
                    "title": r["title"],
                    "owner_id": r["owner_id"],
                    "members": list(r["members"] or []),
                    "last_message": last,
                    "unread": int(r["unread"]),
                    "read_seq": r["read_seq"],
                    "muted": conv_id in muted,
                }
            )
        return out

    async def _create(
        self,
        conn: asyncpg.Connection,
        kind: str,
        title: str | None,
        owner: str | None,
        pair: str | None,
    ) -> asyncpg.Record | None:
        conv_id = str(uuid.uuid4())
        data_key, wrapped = self.keys.new(conv_id)
        row = await self.store.insert_conversation(
            conn, conv_id, kind, title, owner, pair, wrapped, self.keys.key_id
        )
        if row is not None:
            self.keys.remember(conv_id, data_key)
        return row

    async def _owned_group(
        self, conn: asyncpg.Connection, actor: str, conv_id: str
    ) -> asyncpg.Record:
        conv = await self.store.conversation(conn, conv_id, lock=True)
        if conv is None:
            raise ApiError(Code.NOT_FOUND, "no such conversation")
        if conv["kind"] != "group":
            raise ApiError(Code.BAD_REQUEST, "members change only in circles")
        if conv["owner_id"] != actor:
            raise ApiError(Code.FORBIDDEN, "only the owner changes members")
        return conv

    async def _join(self, user_ids: list[str], conv_id: str) -> None:
        for uid in user_ids:
            await self.fanout.join_user(NS, uid, room(conv_id))

    async def _broadcast_members(
        self, conv_id: str, members: list[str], change: dict[str, str]
    ) -> None:
        await self.fanout.emit(
            CONVERSATION_MEMBERS,
            {"conversation_id": conv_id, "members": members, **change},
            namespace=NS,
            room=room(conv_id),
        )
