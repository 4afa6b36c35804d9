"""The messaging service as the /messages handlers see it: one object per concept."""

from __future__ import annotations

from dataclasses import dataclass

from messaging.blocks import Blocks
from messaging.conversations import Conversations
from messaging.messages import Messages
from messaging.mutes import Mutes
from messaging.notes import Notes
from messaging.receipts import Receipts
from messaging.tips import Tips


@dataclass(frozen=True, slots=True)
class Messaging:
    conversations: Conversations
    messages: Messages
    receipts: Receipts
    tips: Tips
    notes: Notes
    blocks: Blocks
    mutes: Mutes
