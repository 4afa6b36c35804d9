"""Reactions on messages: a member reacts to a message of their conversation with an emoji (one
emoji or emoji sequence: a skin tone, a ZWJ family, a flag, a keycap), at most once per emoji —
reacting again changes nothing — and takes it back with `message:unreact`. A message holds at
most `MAX_DISTINCT` different emoji. Each change is told to the conversation with the message's
counts now (`message:reacted`); history and `message:new` carry the counts (messaging/extras.py).
A deleted message has no reactions and takes none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from messaging.conversations import NS, require_member, room
from messaging.expression_store import ExpressionStore
from messaging.store import MessagingStore
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.fanout import Fanout
from server.server_events import server_event

#: different emoji one message can hold (Slack's cap is 50, Telegram's far lower)
MAX_DISTINCT = 20
#: code points in one emoji sequence (the longest standard ones, ZWJ families, have 11)
MAX_CODEPOINTS = 16

_ZWJ, _VS16, _VS15, _KEYCAP, _CANCEL_TAG = 0x200D, 0xFE0F, 0xFE0E, 0x20E3, 0xE007F
_KEYCAP_BASES = frozenset(map(ord, "0123456789#*"))
# Extended_Pictographic, to the width emoji need (Unicode 15.1 emoji-data.txt, simplified)
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1F1E5),
    (0x1F200, 0x1F3FA),
    (0x1F400, 0x1FAFF),
)


def _pictographic(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _PICTOGRAPHIC)


def _regional(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF


def _modifier(cp: int) -> bool:  # skin tones
    return 0x1F3FB <= cp <= 0x1F3FF


def _tag(cp: int) -> bool:  # subdivision flags: 🏴 + tag letters + cancel tag
    return 0xE0020 <= cp <= 0xE007E


def _element(cps: list[int], i: int) -> int | None:
    """Parse one emoji element at `i` (a flag, a keycap, a pictograph with its presentation
    selector, skin tone or tags); where it ends, or None when there is none."""
    n = len(cps)
    cp = cps[i]
    if _regional(cp):  # a flag is a pair of regional indicators
        return i + 2 if i + 1 < n and _regional(cps[i + 1]) else None
    if cp in _KEYCAP_BASES:  # a keycap: digit, optional VS16, U+20E3
        j = i + 1 + (i + 1 < n and cps[i + 1] == _VS16)
        return j + 1 if j < n and cps[j] == _KEYCAP else None
    if not (_pictographic(cp) or _modifier(cp)):
        return None
    j = i + 1
    if j < n and cps[j] in (_VS16, _VS15):
        j += 1
    elif j < n and _modifier(cps[j]):
        j += 1
    if j < n and _tag(cps[j]):
        while j < n and _tag(cps[j]):
            j += 1
        if j >= n or cps[j] != _CANCEL_TAG:
            return None
        j += 1
    return j


def is_emoji(text: str) -> bool:
    """One emoji or emoji sequence (elements joined by ZWJ), nothing else around it."""
    cps = [ord(c) for c in text]
    if not cps or len(cps) > MAX_CODEPOINTS:
        return False
    i = 0
    while True:
        end = _element(cps, i)
        if end is None:
            return False
        if end == len(cps):
            return True
        if cps[end] != _ZWJ or end + 1 == len(cps):
            return False
        i = end + 1


class ReactionChange(Outgoing):
    """`message:reacted`: a member reacted to a message (or took a reaction back); the
    message's counts after."""

    conversation_id: str
    message_id: str
    seq: int = Field(description="the message's seq")
    reactions: dict[str, int] = Field(description="emoji → how many members reacted with it")
    user_id: str = Field(description="the member who reacted")
    emoji: str
    added: bool = Field(description="true: reacted; false: took the reaction back")


class ReactionAck(Outgoing):
    """The ack of `message:react` and `message:unreact`: the message's counts after, and your
    own reactions on it."""

    conversation_id: str
    message_id: str
    seq: int
    reactions: dict[str, int] = Field(description="emoji → how many members reacted with it")
    mine: list[str] = Field(description="the emoji you reacted with")
    changed: bool = Field(
        description="false: nothing changed (already reacted with it, or had not) and nothing"
        " was told to the conversation"
    )


MESSAGE_REACTED = server_event(
    "message:reacted",
    ReactionChange,
    namespaces=(NS,),
    summary="A member reacted to a message or took a reaction back: the message's reaction"
    " counts now",
    example={
        "conversation_id": "<conversation_id>",
        "message_id": "<message_id>",
        "seq": 7,
        "reactions": {"👍": 2, "❤️": 1},
        "user_id": "u_bob",
        "emoji": "👍",
        "added": True,
    },
)


@dataclass(eq=False)
class Reactions:
    messaging: MessagingStore
    store: ExpressionStore
    fanout: Fanout

    async def react(self, user_id: str, conv_id: str, msg_id: str, emoji: str) -> dict[str, Any]:
        return await self._change(user_id, conv_id, msg_id, emoji, True)

    async def unreact(self, user_id: str, conv_id: str, msg_id: str, emoji: str) -> dict[str, Any]:
        return await self._change(user_id, conv_id, msg_id, emoji, False)

    async def _change(
        self, user_id: str, conv_id: str, msg_id: str, emoji: str, add: bool
    ) -> dict[str, Any]:
        if not is_emoji(emoji):
            raise ApiError(Code.BAD_REQUEST, "emoji must be one emoji (or emoji sequence)")
        async with self.store.transaction() as conn:
            member = await require_member(self.messaging, conn, conv_id, user_id)
            msg = await self.store.message_for_reaction(conn, conv_id, msg_id)
            if msg is None or msg["seq"] <= member["joined_seq"]:
                raise ApiError(Code.NOT_FOUND, "no such message")
            if msg["deleted_at"] is not None:
                raise ApiError(Code.NOT_FOUND, "the message was deleted")
            if add:
                present = await self.store.emoji_of(conn, msg_id)
                if emoji not in present and len(present) >= MAX_DISTINCT:
                    raise ApiError(
                        Code.CONFLICT, f"a message holds at most {MAX_DISTINCT} different emoji"
                    )
                changed = await self.store.add_reaction(conn, msg_id, user_id, emoji)
            else:
                changed = await self.store.remove_reaction(conn, msg_id, user_id, emoji)
            counts, mine = (await self.store.reactions(conn, [msg_id], user_id)).get(
                msg_id, ({}, [])
            )
        common = {
            "conversation_id": conv_id,
            "message_id": msg_id,
            "seq": msg["seq"],
            "reactions": counts,
        }
        if changed:
            await self.fanout.emit(
                MESSAGE_REACTED,
                {**common, "user_id": user_id, "emoji": emoji, "added": add},
                namespace=NS,
                room=room(conv_id),
            )
        return {**common, "mine": mine, "changed": changed}
