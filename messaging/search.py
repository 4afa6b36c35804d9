"""Message search over bodies that stay encrypted at rest: a keyed blind index.

Every conversation has its own search key (32 random bytes), stored wrapped by the master key
(`server.crypto.Keyring`, associated data `search|<conversation>`) beside the data key and
re-wrapped with it by `ours keys rotate` (`ConversationKeys.rotate` runs `SearchKeys.rotate`).
A body is cut into words (`words`: Unicode NFKC, casefold, marks removed, runs of
letters and digits, at most `MAX_WORDS` distinct words of at most `MAX_CHARS` characters);
each word is indexed as a whole word and by its prefixes of `MIN_PREFIX` characters and more,
each as the first 8 bytes of HMAC-SHA256(search key, kind + term) (`hashes`). An index row
holds only (conversation, that number, the message's seq): the words are not in the database,
and the same word has unrelated numbers in two conversations.

A query is at most `MAX_QUERY_WORDS` words, normalised the same way; a message matches when it
has every word, the last one as a prefix (what a user types last is usually unfinished).
Candidates come from the index (`SearchStore.matches`), then each is decrypted and checked
against the query (`matches`): a truncated-HMAC collision or a stale row can never show a
message that does not hold the words. What the index reveals to someone holding the database
is in docs/protocol.md ("Search")."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import Field

from messaging.conversations import require_member
from messaging.keys import ConversationKeys, open_message
from messaging.messages import Message, Messages
from messaging.messages import wire as message_wire
from messaging.search_store import COUNT_CAP, SearchStore
from messaging.store import Conn, MessagingStore
from server.contract import Outgoing
from server.crypto import Keyring
from server.errors import ApiError, Code

log = logging.getLogger("ours.messages")

#: characters of a word that count (longer words are cut, in bodies and queries alike)
MAX_CHARS = 32
#: distinct words of one message that are indexed (the first ones; the rest are not searchable)
MAX_WORDS = 200
#: the shortest prefix indexed: a one-letter prefix would match nearly every message
MIN_PREFIX = 2
#: words of one query
MAX_QUERY_WORDS = 8
#: how many rounds a search fetches candidates before it answers a short page
ROUNDS = 4
#: messages re-indexed per transaction
REINDEX_PAGE = 1000
CACHE_SIZE = 10_000

WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; `_` and punctuation split
WHOLE, PREFIX = b"w", b"p"


def normalise(text: str) -> str:
    """NFKC (full-width letters and ligatures become plain ones), casefolded, marks removed
    (Unicode category M: diacritics, and the vowel signs of Indic scripts, so a word stays one
    run of letters): `Café` -> `cafe`, `Straße` -> `strasse`."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    bare = "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))
    return unicodedata.normalize("NFC", bare)


def words(text: str, cap: int = MAX_WORDS) -> list[str]:
    """The distinct normalised words of a text, in order, each cut to `MAX_CHARS`."""
    out: dict[str, None] = {}
    for m in WORD.finditer(normalise(text)):
        out[m.group()[:MAX_CHARS]] = None
        if len(out) >= cap:
            break
    return list(out)


def term_hash(key: bytes, kind: bytes, term: str) -> int:
    """The index's number for a term: the first 8 bytes of its HMAC, as a signed bigint."""
    digest = hmac.new(key, kind + term.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def hashes(key: bytes, text: str) -> list[int]:
    """What a message is indexed under: each word whole, and its prefixes from `MIN_PREFIX`
    characters (the whole word is one of them), without repeats."""
    out: dict[int, None] = {}
    for w in words(text):
        out[term_hash(key, WHOLE, w)] = None
        for n in range(MIN_PREFIX, len(w) + 1):
            out[term_hash(key, PREFIX, w[:n])] = None
    return list(out)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: words that must be there whole, and the last one, a prefix (whole when
    it is shorter than `MIN_PREFIX`)."""

    whole: tuple[str, ...]
    prefix: str | None

    @classmethod
    def parse(cls, text: str) -> Query:
        found = [m.group()[:MAX_CHARS] for m in WORD.finditer(normalise(text))]
        if not found:
            raise ApiError(Code.BAD_REQUEST, "the query has no words")
        if len(found) > MAX_QUERY_WORDS:
            raise ApiError(Code.BAD_REQUEST, f"a query has at most {MAX_QUERY_WORDS} words")
        *first, last = found
        if len(last) < MIN_PREFIX:
            return cls(tuple(dict.fromkeys([*first, last])), None)
        return cls(tuple(dict.fromkeys(first)), last)

    def terms(self, key: bytes) -> list[int]:
        out = [term_hash(key, WHOLE, w) for w in self.whole]
        if self.prefix is not None:
            out.append(term_hash(key, PREFIX, self.prefix))
        return list(dict.fromkeys(out))

    def matches(self, body: str) -> bool:
        """Whether a (decrypted) body holds the query, as the index would say."""
        have = words(body)
        if not all(w in have for w in self.whole):
            return False
        return self.prefix is None or any(w.startswith(self.prefix) for w in have)


class SearchPage(Outgoing):
    """The ack of `message:search`: matching messages, newest first."""

    messages: list[Message]
    next_before_seq: int | None = Field(
        description="pass it as `before_seq` for older matches; null when there are no more"
    )


def search_aad(conv_id: str) -> bytes:
    return f"search|{conv_id}".encode()


class SearchKeys:
    """The conversations' search keys: created on a conversation's first indexed message,
    wrapped by the master key, cached unwrapped (at most `CACHE_SIZE`)."""

    def __init__(self, keyring: Keyring, store: SearchStore) -> None:
        self.keyring = keyring
        self.store = store
        self._keys: OrderedDict[str, bytes] = OrderedDict()

    def _remember(self, conv_id: str, key: bytes) -> bytes:
        self._keys[conv_id] = key
        if len(self._keys) > CACHE_SIZE:
            self._keys.popitem(last=False)
        return key

    async def key(self, conn: Conn, conv_id: str, *, create: bool = False) -> bytes | None:
        """The conversation's search key; None when it has none yet (and `create` is off).

        With `create`, a missing key is made in the caller's transaction (`conn`) and not
        cached: if that transaction rolls back, the key goes with the rows it indexed, and
        the next message makes another."""
        if conv_id in self._keys:
            return self._keys[conv_id]
        wrapped = await self.store.wrapped_key(conn, conv_id)
        if wrapped is not None:
            return self._remember(conv_id, self.keyring.unwrap(wrapped, search_aad(conv_id)))
        if not create:
            return None
        fresh = self.keyring.wrap(os.urandom(32), search_aad(conv_id))
        stored = await self.store.insert_key(conn, conv_id, fresh, self.keyring.key_id)
        key = self.keyring.unwrap(stored, search_aad(conv_id))
        return key if stored == fresh else self._remember(conv_id, key)

    async def rotate(self) -> int:
        """Re-wrap every search key with the current master key; how many."""
        count = 0
        for r in await self.store.wrapped_keys():
            if r["key_id"] == self.keyring.key_id:
                continue
            conv_id = str(r["conversation_id"])
            key = self.keyring.unwrap(r["wrapped_key"], search_aad(conv_id))
            await self.store.rewrap(
                conv_id, self.keyring.wrap(key, search_aad(conv_id)), self.keyring.key_id
            )
            count += 1
        if count:
            log.info("search keys re-wrapped", extra={"count": count})
        return count


@dataclass(eq=False)
class SearchIndex:
    """Keeps the index in step with the messages, in the caller's transaction: what
    `Messages` calls on post, edit and delete (its `MessageIndex`)."""

    store: SearchStore
    keys: SearchKeys

    async def add(self, conn: asyncpg.Connection, conv_id: str, seq: int, body: bytes) -> None:
        key = await self.keys.key(conn, conv_id, create=True)
        assert key is not None
        await self.store.add(conn, conv_id, seq, hashes(key, body.decode()))

    async def add_many(self, conn: asyncpg.Connection, items: list[tuple[str, int, bytes]]) -> None:
        """`add` for many (conversation, seq, body) at once: one statement."""
        convs: list[str] = []
        terms: list[int] = []
        seqs: list[int] = []
        keys: dict[str, bytes] = {}  # once per conversation: a key made here is not cached
        for conv_id, seq, body in items:
            key = keys.get(conv_id)
            if key is None:
                key = await self.keys.key(conn, conv_id, create=True)
                assert key is not None
                keys[conv_id] = key
            found = hashes(key, body.decode())
            convs += [conv_id] * len(found)
            terms += found
            seqs += [seq] * len(found)
        await self.store.add_many(conn, convs, terms, seqs)

    async def replace(self, conn: asyncpg.Connection, conv_id: str, seq: int, body: bytes) -> None:
        await self.store.drop(conn, conv_id, seq)
        await self.add(conn, conv_id, seq, body)

    async def drop(self, conn: asyncpg.Connection, conv_id: str, seq: int) -> None:
        await self.store.drop(conn, conv_id, seq)


@dataclass(eq=False)
class Search:
    """`message:search`: a member's search of one conversation's messages they can see."""

    store: MessagingStore
    index: SearchStore
    keys: ConversationKeys
    search_keys: SearchKeys
    messages: Messages

    async def search(
        self, user_id: str, conv_id: str, text: str, before_seq: int | None, limit: int
    ) -> dict[str, Any]:
        query = Query.parse(text)
        m = await require_member(self.store, self.store.db, conv_id, user_id)
        skey = await self.search_keys.key(self.store.db, conv_id)
        if skey is None:  # nothing indexed in this conversation yet
            return {"messages": [], "next_before_seq": None}
        terms = query.terms(skey)
        joined = m["joined_seq"]
        lead = terms[0]
        if len(terms) > 1:  # walk the rarest term's rows, probe the others
            counts = await self.index.term_counts(conv_id, joined, before_seq, terms)
            if min(counts) == 0:
                return {"messages": [], "next_before_seq": None}
            lead = terms[counts.index(min(counts))] if min(counts) < COUNT_CAP else terms[0]
        others = [t for t in terms if t != lead]
        key = await self.keys.key(conv_id)
        found: list[asyncpg.Record] = []
        cursor = before_seq
        more = True
        for _ in range(ROUNDS):
            want = limit - len(found)
            rows = await self.index.matches(conv_id, joined, cursor, lead, others, want)
            for r in rows:
                body = message_wire(key, conv_id, r)["body"]
                if body is not None and query.matches(body):
                    found.append(r)
            if len(rows) < want:  # the index has no more
                more = False
                break
            cursor = rows[-1]["seq"]
            if len(found) == limit:
                break
        messages = await self.messages.render(key, conv_id, found, user_id)
        return {"messages": messages, "next_before_seq": cursor if more else None}

    async def reindex(self, conv_id: str) -> int:
        """Rebuild one conversation's index from its messages (those posted before the index
        existed, or after a restore); how many messages. A page at a time, each in its own
        transaction with its messages locked, so a concurrent edit or delete waits for it."""
        key = await self.keys.key(conv_id)
        count, after = 0, 0
        while True:
            async with self.store.transaction() as conn:
                skey = await self.search_keys.key(conn, conv_id, create=True)
                assert skey is not None
                page = await self.index.bodies(conn, conv_id, after, REINDEX_PAGE)
                if not page:
                    return count
                terms: list[int] = []
                seqs: list[int] = []
                for r in page:
                    body = open_message(key, conv_id, str(r["id"]), r["body"])
                    found = hashes(skey, body)
                    terms += found
                    seqs += [r["seq"]] * len(found)
                await self.index.replace_many(
                    conn, conv_id, [r["seq"] for r in page], (terms, seqs)
                )
            count += len(page)
            after = page[-1]["seq"]

    async def reindex_all(self) -> dict[str, int]:
        """`reindex` every conversation: messages indexed per conversation."""
        return {c: await self.reindex(c) for c in await self.index.conversation_ids()}
