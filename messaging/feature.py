"""Wires messaging into the node: the store, the conversations' keys and the services (one per
concept, messaging/service.py), the scheduled-note job, and its share of a user's data
(conversations, messages decrypted, scheduled notes, blocks both ways, mutes). Tips move HOURS
on the ledger handed in (`TipLedger`, messaging/tips.py); presence follows blocks through
`self.blocks.follow(...)` (`BlockFollower`, messaging/blocks.py), wired by app.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from messaging.blocks import Blocks
from messaging.blocks_store import BlocksStore
from messaging.conversations import Conversations
from messaging.keys import ConversationKeys
from messaging.mentions import Mentions
from messaging.messages import Messages
from messaging.mutes import Mutes
from messaging.notes import JOB, Notes
from messaging.notes_store import NotesStore
from messaging.receipts import Receipts
from messaging.service import Messaging
from messaging.store import MessagingStore
from messaging.tips import TipLedger, Tips
from server.feature import Feature
from server.personal_data import Erasure

if TYPE_CHECKING:
    from server.node import Node

PAGE = 100


class MessagingFeature(Feature):
    name = "messaging"

    def __init__(self, node: Node, *, ledger: TipLedger) -> None:
        super().__init__(node)
        self.store = MessagingStore(node.storage)
        self.notes_store = NotesStore(node.storage)
        self.keys = ConversationKeys(node.keyring, self.store)
        self.blocks_store = BlocksStore(node.storage)
        self.blocks = blocks = Blocks(self.blocks_store)
        mutes = Mutes(self.store, self.blocks_store)
        messages = Messages(
            self.store,
            self.keys,
            node.fanout,
            node.bus,
            blocks=blocks,
            mutes=mutes,
            mentions=Mentions(self.store, blocks),
        )
        self.service = Messaging(
            conversations=Conversations(self.store, self.keys, node.fanout, blocks, mutes),
            messages=messages,
            receipts=Receipts(self.store, node.fanout, node.bus, blocks),
            tips=Tips(self.store, self.keys, messages, ledger, node.bus),
            notes=Notes(self.store, self.notes_store, self.keys, messages, node.scheduler),
            blocks=blocks,
            mutes=mutes,
        )
        node.scheduler.register(JOB, self.service.notes.deliver)

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """Conversations, every message the user can read (decrypted), scheduled notes."""
        svc = self.service
        conversations = await svc.conversations.list_for(user_id, 100_000)
        messages: dict[str, list[dict[str, Any]]] = {}
        for conv in conversations:
            page: list[dict[str, Any]] = []
            before: int | None = None
            while True:
                got = await svc.messages.history(user_id, conv["id"], before, PAGE)
                page.extend(got["messages"])
                before = got["next_before_seq"]
                if before is None:
                    break
            messages[conv["id"]] = sorted(page, key=lambda m: m["seq"])
        return {
            "conversations": conversations,
            "messages": messages,
            "scheduled_notes": await svc.notes.export(user_id),
            **await self._export_safety(user_id),
        }

    async def _export_safety(self, user_id: str) -> dict[str, Any]:
        """`blocks`: whom they block and who blocks them; `mutes`: their mutes."""
        rows = await self.blocks_store.export_user(user_id)
        return {
            "blocks": {"blocked": rows["blocked"], "blocked_by": rows["blocked_by"]},
            "mutes": rows["mutes"],
        }

    async def erase_user(self, erasure: Erasure) -> None:
        await self.blocks_store.erase_user(erasure)
        await self.notes_store.erase_user(erasure)
        await self.store.erase_user(erasure)
