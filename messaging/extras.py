"""What a message carries beside its own fields, in history, `message:new` and
`message:updated`: the counts of its reactions (messaging/reactions.py) and, on a reply, the
message it quotes (`reply`: id, seq, sender, a short excerpt — or `deleted: true`).

Bodies stay sealed at rest: a quote's excerpt is opened from the quoted row with the
conversation's key each time it is shown, never stored. A page of history costs two queries
here whatever its size: one for the reactions of all its messages, one for the messages its
replies quote. The quote is part of the reply: a member who joined after the quoted message
sees its excerpt in the reply (as the clients people know show it), not the message itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import Field

from messaging.conversations import MessageKind
from messaging.expression_store import ExpressionStore
from messaging.keys import open_message
from messaging.store import Conn
from server.contract import Outgoing

#: characters of a quoted body shown in a reply (then "…")
EXCERPT = 100


class QuotedMessage(Outgoing):
    """The message a reply answers, as the reply shows it."""

    id: str
    seq: int
    sender_id: str
    kind: MessageKind
    excerpt: str | None = Field(
        description=f"the start of its body (at most {EXCERPT} characters, then …); null once"
        " deleted"
    )
    deleted: bool


def excerpt(body: str) -> str:
    return body if len(body) <= EXCERPT else body[:EXCERPT].rstrip() + "…"


def quote(key: bytes, conv_id: str, row: Any) -> dict[str, Any]:
    msg_id = str(row["id"])
    deleted = row["deleted_at"] is not None or row["body"] is None
    return {
        "id": msg_id,
        "seq": row["seq"],
        "sender_id": row["sender_id"],
        "kind": row["kind"],
        "excerpt": None if deleted else excerpt(open_message(key, conv_id, msg_id, row["body"])),
        "deleted": deleted,
    }


@dataclass(eq=False)
class MessageExtras:
    store: ExpressionStore

    async def add(
        self,
        conv_id: str,
        key: bytes,
        messages: list[dict[str, Any]],
        *,
        viewer: str | None = None,
        reactions: bool = True,
        conn: Conn = None,
    ) -> None:
        """In place, on messages as clients see them: `reactions` ({emoji: count}, on those
        that have any; with a `viewer`, also `my_reactions`) and `reply` on replies."""
        db = conn or self.store.db
        if reactions:
            got = await self.store.reactions(db, [m["id"] for m in messages], viewer)
            for m in messages:
                if m["id"] in got:
                    counts, mine = got[m["id"]]
                    m["reactions"] = counts
                    if viewer is not None:
                        m["my_reactions"] = mine
        wanted = list({m["reply_to"] for m in messages if m.get("reply_to")})
        quoted = {str(r["id"]): r for r in await self.store.quoted(db, conv_id, wanted)}
        for m in messages:
            row = quoted.get(m.get("reply_to") or "")
            if row is not None:
                m["reply"] = quote(key, conv_id, row)

    async def forget(self, conn: asyncpg.Connection, msg_id: str) -> None:
        """In a delete's transaction: the message's reactions go with its body."""
        await self.store.forget_message(conn, msg_id)
