"""Wires messaging into the node: the store, the conversations' keys and the services (one per
concept, messaging/service.py), the scheduled-note job, and its share of a user's data
(conversations, messages decrypted, scheduled notes) and the search index (its rows name no
user: dropped with the messages of an erased sender). Tips move HOURS on the ledger handed in
(`TipLedger`, messaging/tips.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from messaging.conversations import Conversations
from messaging.keys import ConversationKeys
from messaging.messages import Messages
from messaging.notes import JOB, Notes
from messaging.notes_store import NotesStore
from messaging.receipts import Receipts
from messaging.search import Search, SearchIndex, SearchKeys
from messaging.search_store import SearchStore
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
        self.search_store = SearchStore(node.storage)
        self.search_keys = SearchKeys(node.keyring, self.search_store)
        self.keys.companions.append(self.search_keys)
        messages = Messages(
            self.store,
            self.keys,
            node.fanout,
            node.bus,
            SearchIndex(self.search_store, self.search_keys),
        )
        self.service = Messaging(
            conversations=Conversations(self.store, self.keys, node.fanout),
            messages=messages,
            receipts=Receipts(self.store, node.fanout, node.bus),
            tips=Tips(self.store, self.keys, messages, ledger, node.bus),
            notes=Notes(self.store, self.notes_store, self.keys, messages, node.scheduler),
            search=Search(self.store, self.search_store, self.keys, self.search_keys),
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
        }

    async def erase_user(self, erasure: Erasure) -> None:
        await self.notes_store.erase_user(erasure)
        await self.search_store.erase_user(erasure)  # while their messages still name them
        await self.store.erase_user(erasure)
