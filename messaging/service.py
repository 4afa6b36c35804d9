"""The messaging service as the /messages handlers see it: one object per concept."""

from __future__ import annotations

from dataclasses import dataclass

from messaging.attachments import Attachments
from messaging.blocks import Blocks
from messaging.conversations import Conversations
from messaging.messages import Messages
from messaging.mutes import Mutes
from messaging.notes import Notes
from messaging.reactions import Reactions
from messaging.receipts import Receipts
from messaging.search import Search
from messaging.seen import Seen
from messaging.tips import Tips


@dataclass(frozen=True, slots=True)
class Messaging:
    conversations: Conversations
    messages: Messages
    receipts: Receipts
    tips: Tips
    notes: Notes
    reactions: Reactions
    seen: Seen
    attachments: Attachments
    search: Search
    blocks: Blocks
    mutes: Mutes
