"""Conversation data keys and sealed bodies.

Every conversation has its own data key (AES-256-GCM), stored wrapped by the master key
(`server.crypto.Keyring`) in its row; unwrapped keys are cached here (at most `CACHE_SIZE`,
the oldest out first). A message body is sealed with its conversation's key and bound (AAD) to its
conversation and row, a scheduled note's body to its conversation and note, so a ciphertext
copied onto another row does not open. `rotate` re-wraps every data key with the current master
key (`ours keys rotate`), and the other per-conversation keys handed in as `companions` (the
search keys, messaging/search.py)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

from messaging.store import Conn, MessagingStore
from server.crypto import DecryptError, Keyring, new_data_key, seal, unseal
from server.errors import ApiError, Code

log = logging.getLogger("ours.messages")

CACHE_SIZE = 10_000


def message_aad(conv_id: str, msg_id: str) -> bytes:
    return f"{conv_id}|{msg_id}".encode()


def note_aad(conv_id: str, note_id: str) -> bytes:
    return f"note|{conv_id}|{note_id}".encode()


def seal_message(key: bytes, conv_id: str, msg_id: str, body: bytes) -> bytes:
    return seal(key, body, message_aad(conv_id, msg_id))


def open_message(key: bytes, conv_id: str, msg_id: str, sealed: bytes) -> str:
    """The body; `internal` (and a log line) when it does not open where it is."""
    try:
        return unseal(key, sealed, message_aad(conv_id, msg_id)).decode()
    except DecryptError:
        log.error("message failed to decrypt", extra={"message_id": msg_id})
        raise ApiError(Code.INTERNAL, "a message could not be decrypted") from None


class Rewrapped(Protocol):
    """Other keys wrapped by the master key, re-wrapped with the data keys."""

    async def rotate(self) -> int: ...


class ConversationKeys:
    def __init__(self, keyring: Keyring, store: MessagingStore) -> None:
        self.keyring = keyring
        self.store = store
        self._keys: OrderedDict[str, bytes] = OrderedDict()  # conversation -> data key
        self.companions: list[Rewrapped] = []

    @property
    def key_id(self) -> str:
        """Which master key wraps data keys now (stored beside each wrapped key)."""
        return self.keyring.key_id

    def new(self, conv_id: str) -> tuple[bytes, bytes]:
        """A fresh data key for a new conversation, and its wrapped form (for the row)."""
        data_key = new_data_key()
        return data_key, self.keyring.wrap(data_key, conv_id.encode())

    def remember(self, conv_id: str, data_key: bytes) -> None:
        self._keys[conv_id] = data_key
        if len(self._keys) > CACHE_SIZE:
            self._keys.popitem(last=False)

    def unwrap(self, conv_id: str, wrapped: bytes) -> bytes:
        """The data key of a conversation whose row is at hand."""
        key = self._keys.get(conv_id)
        if key is None:
            key = self.keyring.unwrap(wrapped, conv_id.encode())
            self.remember(conv_id, key)
        return key

    async def key(self, conv_id: str, conn: Conn = None) -> bytes:
        """The data key of a conversation (its row read through `conn`, else the pool)."""
        if conv_id in self._keys:
            return self._keys[conv_id]
        row = await self.store.conversation(conn or self.store.db, conv_id)
        if row is None:
            raise ApiError(Code.NOT_FOUND, "no such conversation")
        return self.unwrap(conv_id, row["wrapped_key"])

    async def rotate(self) -> int:
        """Re-wrap every conversation's data key (and the companions' keys) with the current
        master key; how many data keys."""
        count = 0
        for r in await self.store.wrapped_keys():
            if r["key_id"] == self.keyring.key_id:
                continue
            conv_id = str(r["id"])
            data_key = self.keyring.unwrap(r["wrapped_key"], conv_id.encode())
            await self.store.rewrap(
                conv_id, self.keyring.wrap(data_key, conv_id.encode()), self.keyring.key_id
            )
            count += 1
        for companion in self.companions:
            await companion.rotate()
        return count
