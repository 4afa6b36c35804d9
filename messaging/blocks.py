"""Blocks between users. While either of two users blocks the other there is a block between
them, and each is hidden from the other: no direct conversation opens or delivers (sends,
edits, tips, scheduled notes are `forbidden`; receipts stay with the reader), no tip goes from
one to the other, no mention of one by the other notifies, typing is not shown to the other
(also in circles they share), and presence shows each offline to the other. Messages in a
circle both belong to still reach both: leaving the circle is the way out there.

Presence is another feature's: it follows blocks through `BlockFollower` (presence's
`Presence.hide` / `show`), which the composition root (app.py) hands in with `follow`; this
service, in turn, is what presence asks who is hidden from whom (`hidden`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field

from messaging.blocks_store import BlocksStore
from messaging.store import Conn
from server.contract import Outgoing
from server.errors import ApiError, Code

BLOCKED = "there is a block between you and this user"
MAX_LISTED = 1000


class BlockFollower(Protocol):
    """Something else that hides two users from each other while a block is between them."""

    async def hide(self, a: str, b: str) -> None:
        """A block between `a` and `b` began (or was made again): hide them both ways."""
        ...

    async def show(self, a: str, b: str) -> None:
        """No block is left between `a` and `b`: show them to each other again."""
        ...


class BlockChanged(Outgoing):
    """The ack of `user:block` and `user:unblock`."""

    user_id: str = Field(description="the other user")
    blocked: bool = Field(description="whether you block them now")


class BlockedUser(Outgoing):
    user_id: str
    since: str = Field(description="when you blocked them (ISO 8601)")


class BlockedList(Outgoing):
    """The ack of `user:blocked`: the users you block, latest first."""

    blocked: list[BlockedUser]


@dataclass(eq=False)
class Blocks:
    store: BlocksStore
    followers: list[BlockFollower] = field(default_factory=list)

    def follow(self, follower: BlockFollower) -> None:
        """Have `follower` hide and show pairs as blocks begin and end (app.py wires this)."""
        self.followers.append(follower)

    async def block(self, user_id: str, other: str) -> dict[str, Any]:
        """Block `other` (again: nothing changes)."""
        if other == user_id:
            raise ApiError(Code.BAD_REQUEST, "you cannot block yourself")
        await self.store.block(user_id, other)
        for f in self.followers:  # also on a repeat: hiding twice is harmless, and heals
            await f.hide(user_id, other)
        return {"user_id": other, "blocked": True}

    async def unblock(self, user_id: str, other: str) -> dict[str, Any]:
        """Lift your block of `other` (none: nothing changes). A block the other way stays."""
        if other == user_id:
            raise ApiError(Code.BAD_REQUEST, "you cannot block yourself")
        await self.store.unblock(user_id, other)
        if not await self.store.between(self.store.db, user_id, other):
            for f in self.followers:
                await f.show(user_id, other)
        return {"user_id": other, "blocked": False}

    async def blocked(self, user_id: str) -> dict[str, Any]:
        rows = await self.store.blocked_by(user_id, MAX_LISTED)
        return {
            "blocked": [
                {"user_id": r["blocked_id"], "since": r["created_at"].isoformat()} for r in rows
            ]
        }

    # -- what the other services ask ----------------------------------------------------------

    async def refuse_between(self, user_id: str, other: str, conn: Conn = None) -> None:
        """`forbidden` when there is a block between the two."""
        if await self.store.between(conn or self.store.db, user_id, other):
            raise ApiError(Code.FORBIDDEN, BLOCKED)

    async def refuse_direct(self, conn: Conn, conv_id: str, user_id: str) -> None:
        """`forbidden` when `conv_id` is a direct conversation with a block between its two."""
        if await self.store.in_direct(conn, conv_id, user_id):
            raise ApiError(Code.FORBIDDEN, BLOCKED)

    async def blocked_pairs(self, conn: Conn, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (user, other) pairs have a block between them (a batch's sends)."""
        return await self.store.blocked_pairs(conn, pairs)

    async def in_direct(self, conn: Conn, conv_id: str, user_id: str) -> bool:
        return await self.store.in_direct(conn, conv_id, user_id)

    async def among(self, user_id: str, others: list[str], conn: Conn = None) -> set[str]:
        """Which of `others` have a block with `user_id` (either direction)."""
        return await self.store.among(conn or self.store.db, user_id, others)

    async def hidden_in(self, conv_id: str, user_id: str) -> set[str]:
        """The members of a conversation there is a block with `user_id` with."""
        return await self.store.hidden_in(conv_id, user_id)

    async def hidden(self, viewer: str, user_ids: list[str]) -> set[str]:
        """Which of `user_ids` are hidden from `viewer` (presence asks this)."""
        return await self.store.among(self.store.db, viewer, user_ids)
