"""Wires messaging into the node: the store, the conversations' keys and the services (one per
concept, messaging/service.py), the scheduled-note job, and its share of a user's data
(conversations, messages decrypted, scheduled notes, reactions, blocks both ways, mutes) and the
search index (its rows name no user: dropped with the messages of an erased sender). Tips move
HOURS on the ledger handed in (`TipLedger`, messaging/tips.py); attachments live at the media
provider handed in (`AttachmentMedia`, messaging/attachments.py); presence follows blocks
through `self.blocks.follow(...)` (`BlockFollower`, messaging/blocks.py), wired by app.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from messaging import http
from messaging.attachments import PURGE_JOB, UNUSED_JOB, AttachmentMedia, Attachments
from messaging.attachments_store import AttachmentsStore
from messaging.blocks import Blocks
from messaging.blocks_store import BlocksStore
from messaging.conversations import Conversations
from messaging.expression_store import ExpressionStore
from messaging.extras import MessageExtras
from messaging.keys import ConversationKeys
from messaging.mentions import Mentions
from messaging.messages import Messages
from messaging.mutes import Mutes
from messaging.notes import JOB, Notes
from messaging.notes_store import NotesStore
from messaging.reactions import Reactions
from messaging.receipts import Receipts
from messaging.search import Search, SearchIndex, SearchKeys
from messaging.search_store import SearchStore
from messaging.seen import Seen
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

    def __init__(self, node: Node, *, ledger: TipLedger, media: AttachmentMedia) -> None:
        super().__init__(node)
        self.store = MessagingStore(node.storage)
        self.notes_store = NotesStore(node.storage)
        self.keys = ConversationKeys(node.keyring, self.store)
        self.expression_store = ExpressionStore(node.storage)
        attachments = Attachments(
            AttachmentsStore(node.storage),
            self.store,
            self.keys,
            media,
            node.scheduler,
            node.fanout,
        )
        self.search_store = SearchStore(node.storage)
        self.search_keys = SearchKeys(node.keyring, self.search_store)
        self.keys.companions.append(self.search_keys)
        self.blocks_store = BlocksStore(node.storage)
        self.blocks = blocks = Blocks(self.blocks_store)
        mutes = Mutes(self.store, self.blocks_store)
        messages = Messages(
            self.store,
            self.keys,
            node.fanout,
            node.bus,
            MessageExtras(self.expression_store),
            attachments,
            blocks=blocks,
            mutes=mutes,
            mentions=Mentions(self.store, blocks),
            index=SearchIndex(self.search_store, self.search_keys),
        )
        self.service = Messaging(
            conversations=Conversations(self.store, self.keys, node.fanout, blocks, mutes),
            messages=messages,
            receipts=Receipts(self.store, node.fanout, node.bus, blocks),
            tips=Tips(self.store, self.keys, messages, ledger, node.bus),
            notes=Notes(self.store, self.notes_store, self.keys, messages, node.scheduler),
            reactions=Reactions(self.store, self.expression_store, node.fanout),
            seen=Seen(self.store, self.expression_store),
            attachments=attachments,
            search=Search(self.store, self.search_store, self.keys, self.search_keys, messages),
            blocks=blocks,
            mutes=mutes,
        )
        node.scheduler.register(JOB, self.service.notes.deliver)
        node.scheduler.register(PURGE_JOB, attachments.purge)
        node.scheduler.register(UNUSED_JOB, attachments.expire_unused)

    def routes(self, app: web.Application) -> None:
        http.add_routes(app, self.service.attachments)

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """Conversations, every message the user can read (decrypted), scheduled notes, the
        attachments they uploaded (what they are, not the files)."""
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
            "reactions": await self.expression_store.export_user(user_id),
            "attachments": await svc.attachments.export(user_id),
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
        await self.expression_store.erase_user(erasure)  # before their messages are tombstoned
        await self.search_store.erase_user(erasure)  # while their messages still name them
        await self.store.erase_user(erasure)
        await self.service.attachments.erase_user(erasure)  # after: conversations left empty
