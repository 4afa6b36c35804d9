"""Mentions in circles: an `@user_id` token in a circle message's body that names another
member reaches that member as a `mention` notification (through the router: `message.mentioned`
on the bus, published after the commit with the message's `message.sent`). The mentioned
member's `message` notification for the same message stays in-app, so one message pushes once;
a mention pushes even where the member muted the circle (as Slack and WhatsApp do). Mentions
by a user there is a block with (either way) produce nothing. Direct conversations have no
mentions: every message there notifies the other already."""

from __future__ import annotations

import re
from dataclasses import dataclass

from messaging.blocks import Blocks
from messaging.conversations import MAX_MEMBERS
from messaging.store import MessagingStore

#: `@` not inside a word or an address, then a user id of the letters the event ids allow
MENTION_RE = re.compile(r"(?<![\w@])@([A-Za-z0-9_.:\-]{1,64})")


def tokens(body: str | None) -> list[str]:
    """The user ids an `@` names in `body`, in order, without repeats; a trailing `.`, `:` or
    `-` (the end of a sentence) counts too, so both readings are kept."""
    out: dict[str, None] = {}
    if not body or "@" not in body:
        return []  # most messages (the regex's look-behind makes a scan of them cost)
    for m in MENTION_RE.finditer(body):
        name = m.group(1)
        out[name] = None
        trimmed = name.rstrip(".:-")
        if trimmed:
            out[trimmed] = None
    return list(out)


@dataclass(eq=False)
class Mentions:
    store: MessagingStore
    blocks: Blocks

    async def of(self, conv_id: str, sender: str, body: str | None, others: list[str]) -> list[str]:
        """The members of `others` a circle message from `sender` mentions (none in a direct
        conversation, none there is a block with)."""
        named = set(tokens(body))
        mentioned = [m for m in others if m in named and m != sender]
        if not mentioned:
            return []  # most messages: no query at all
        conv = await self.store.conversation(self.store.db, conv_id)
        if conv is None or conv["kind"] != "group":
            return []
        hidden = await self.blocks.among(sender, mentioned)
        return [m for m in mentioned if m not in hidden][:MAX_MEMBERS]
