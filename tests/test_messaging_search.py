"""Message search on /messages (`message:search`): a keyed blind index over bodies that stay
encrypted, with real clients on a real server and real PostgreSQL: words and prefixes, one
conversation only, members only and from when they joined, re-indexing on edit, rows dropped on
delete and erasure, no plaintext in any row, search keys re-wrapped by `ours keys rotate`."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from messaging.search import PREFIX, WHOLE, Query, hashes, search_aad, term_hash, words
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings
from tests.helpers import ROOT, Client, ServerHandle, connect, err, ok, settings_env, start_server

NS = "/messages"


async def send(c: Client, cid: str, mid: str, body: str) -> dict[str, Any]:
    return dict(
        await ok(c, "message:send", {"conversation_id": cid, "client_msg_id": mid, "body": body})
    )


async def search(c: Client, cid: str, query: str, **extra: Any) -> dict[str, Any]:
    return dict(await ok(c, "message:search", {"conversation_id": cid, "query": query, **extra}))


async def bodies(c: Client, cid: str, query: str) -> list[str]:
    return [m["body"] for m in (await search(c, cid, query))["messages"]]


async def search_key(server: ServerHandle, cid: str) -> bytes:
    wrapped = await server.node.storage.db.fetchval(
        "SELECT wrapped_key FROM conversation_search_keys WHERE conversation_id = $1", cid
    )
    return server.node.keyring.unwrap(wrapped, search_aad(cid))


async def index_rows(server: ServerHandle, cid: str, seq: int | None = None) -> set[int]:
    rows = await server.node.storage.db.fetch(
        "SELECT term FROM message_search WHERE conversation_id = $1"
        " AND ($2::bigint IS NULL OR seq = $2)",
        cid,
        seq,
    )
    return {r["term"] for r in rows}


# -- the pieces --------------------------------------------------------------------------------


def test_words_are_normalised_and_capped() -> None:
    fullwidth_c = unicodedata.lookup("FULLWIDTH LATIN CAPITAL LETTER C")
    text = f"{fullwidth_c}afé NAÏVE Straße ﬁne don't foo_bar Ångström café"
    assert words(text) == ["cafe", "naive", "strasse", "fine", "don", "t", "foo", "bar", "angstrom"]
    assert words("x" * 40) == ["x" * 32]
    assert words("हिन्दी में") == ["हनद", "म"]  # vowel signs go, a word stays one run
    assert len(words(" ".join(f"w{i}" for i in range(500)))) == 200
    key = b"k" * 32
    # a word whole and its prefixes from 2 characters: "tea" -> w:tea, p:te, p:tea
    assert set(hashes(key, "tea")) == {
        term_hash(key, WHOLE, "tea"),
        term_hash(key, PREFIX, "te"),
        term_hash(key, PREFIX, "tea"),
    }
    assert term_hash(key, WHOLE, "tea") != term_hash(b"j" * 32, WHOLE, "tea")
    q = Query.parse("Meet  TOMO")
    assert (q.whole, q.prefix) == (("meet",), "tomo")
    assert q.matches("meet you tomorrow") and not q.matches("meeting tomorrow")
    assert Query.parse("plan b").prefix is None  # a one-letter last word is matched whole


# -- over the socket ---------------------------------------------------------------------------


async def test_search_by_word_and_prefix_in_one_conversation_only(server: ServerHandle) -> None:
    alice = await connect(server.url, NS, server.token("alice"))
    bob = await connect(server.url, NS, server.token("bob"))
    carol = await connect(server.url, NS, server.token("carol"))
    ab = (await ok(alice, "conversation:open", {"user_id": "bob"}))["id"]
    ac = (await ok(alice, "conversation:open", {"user_id": "carol"}))["id"]

    first = await send(alice, ab, "1", "Meet me at the Café tomorrow")
    await send(bob, ab, "2", "nothing to see here")
    third = await send(alice, ab, "3", "the CAFE is closed on Mondays")
    other = await send(alice, ac, "1", "a café in another conversation")

    found = await search(bob, ab, "cafe")
    assert [m["id"] for m in found["messages"]] == [third["id"], first["id"]]  # newest first
    assert found["next_before_seq"] is None
    history = {
        m["id"]: m for m in (await ok(bob, "message:history", {"conversation_id": ab}))["messages"]
    }
    assert found["messages"] == [history[third["id"]], history[first["id"]]]  # history's form
    assert await bodies(bob, ab, "CAFÉ") == await bodies(bob, ab, "café")
    assert await bodies(bob, ab, "tomo") == ["Meet me at the Café tomorrow"]  # a prefix
    assert await bodies(bob, ab, "meet tomorrow") == ["Meet me at the Café tomorrow"]
    assert await bodies(bob, ab, "the clo") == ["the CAFE is closed on Mondays"]  # AND
    assert await bodies(bob, ab, "caf") == [
        "the CAFE is closed on Mondays",
        "Meet me at the Café tomorrow",
    ]
    assert await bodies(bob, ab, "meeting") == []  # a whole word is not a prefix of a longer one
    assert await bodies(bob, ab, "tomo meet") == []  # only the last word is a prefix
    assert await bodies(bob, ab, "closed tomorrow") == []
    assert await bodies(bob, ab, "conversation") == []  # the other conversation's word
    # the same word is another number in the other conversation: not found there by this one
    assert [m["id"] for m in (await search(alice, ac, "cafe"))["messages"]] == [other["id"]]
    k_ab, k_ac = await search_key(server, ab), await search_key(server, ac)
    cafe_ab, cafe_ac = term_hash(k_ab, WHOLE, "cafe"), term_hash(k_ac, WHOLE, "cafe")
    assert cafe_ab != cafe_ac
    assert cafe_ab in await index_rows(server, ab) and cafe_ab not in await index_rows(server, ac)
    assert cafe_ac in await index_rows(server, ac) and cafe_ac not in await index_rows(server, ab)

    # members only; bad queries
    assert await err(carol, "message:search", {"conversation_id": ab, "query": "cafe"}) == (
        "forbidden"
    )
    for bad in ["", "x" * 201, "?! ... --", " ".join(["word"] * 9)]:
        assert await err(bob, "message:search", {"conversation_id": ab, "query": bad}) == (
            "bad_request"
        ), bad
    for payload in [
        {"conversation_id": ab, "query": "cafe", "limit": 0},
        {"conversation_id": ab, "query": "cafe", "limit": 51},
        {"conversation_id": ab, "query": "cafe", "before_seq": 0},
        {"conversation_id": ab},
        {"conversation_id": "not-a-uuid", "query": "cafe"},
        {"conversation_id": ab, "query": "cafe", "extra": 1},
    ]:
        assert await err(bob, "message:search", payload) == "bad_request", payload

    # an edit re-indexes, a delete drops the message's rows
    await ok(
        alice,
        "message:edit",
        {"conversation_id": ab, "message_id": third["id"], "body": "the bar is open"},
    )
    assert await bodies(bob, ab, "closed") == []
    assert await bodies(bob, ab, "bar open") == ["the bar is open"]
    assert await index_rows(server, ab, third["seq"]) == set(hashes(k_ab, "the bar is open"))
    assert await index_rows(server, ab, first["seq"])
    await ok(alice, "message:delete", {"conversation_id": ab, "message_id": first["id"]})
    assert await index_rows(server, ab, first["seq"]) == set()
    assert await bodies(bob, ab, "tomorrow") == []
    for c in (alice, bob, carol):
        await c.close()


async def test_search_pages_and_sees_only_since_joining(server: ServerHandle) -> None:
    owner = await connect(server.url, NS, server.token("owner"))
    cid = (await ok(owner, "conversation:create", {"title": "club", "members": ["m1"]}))["id"]
    await send(owner, cid, "early", "the secret plan before dave joined")
    await ok(owner, "conversation:add", {"conversation_id": cid, "user_id": "dave"})
    dave = await connect(server.url, NS, server.token("dave"))
    posted = [await send(owner, cid, f"p{i}", f"plan number {i}") for i in range(5)]
    assert len(await bodies(owner, cid, "plan")) == 6
    seen: list[int] = []
    before = None
    while True:
        page = await search(dave, cid, "pla", limit=2, **({"before_seq": before} if before else {}))
        seen += [m["seq"] for m in page["messages"]]
        before = page["next_before_seq"]
        if before is None:
            break
    assert seen == [p["seq"] for p in reversed(posted)]  # not the one before dave joined
    assert await bodies(dave, cid, "secret") == []

    # tips and delivered notes are indexed too
    await server.features.ledger.service.grant("admin", "owner", Decimal(10), "g-search")
    tip = await ok(
        owner,
        "tip:send",
        {"conversation_id": cid, "amount": 3, "client_msg_id": "t1", "to_user": "dave"},
    )
    assert [m["id"] for m in (await search(dave, cid, "hours"))["messages"]] == [tip["id"]]
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    note = await ok(
        owner,
        "message:schedule",
        {"conversation_id": cid, "body": "happy birthday", "deliver_at": at},
    )
    await server.features.messaging.service.notes.deliver({"id": note["id"]})  # the job's call
    assert await bodies(dave, cid, "birthd") == ["happy birthday"]
    await owner.close()
    await dave.close()


async def test_rows_hold_no_plaintext_word(server: ServerHandle) -> None:
    alice = await connect(server.url, NS, server.token("alice"))
    cid = (await ok(alice, "conversation:open", {"user_id": "bob"}))["id"]
    texts = [
        "Purple giraffes juggle quietly tonight",
        "Swimming lessons moved onto Thursday morning",
        "Zürich émigrés sing Öresund hymns",
    ]
    for i, t in enumerate(texts):
        await send(alice, cid, f"m{i}", t)
    edited = await send(alice, cid, "e", "temporary wording")
    await ok(
        alice,
        "message:edit",
        {"conversation_id": cid, "message_id": edited["id"], "body": "Kangaroo pyjamas"},
    )
    db = server.node.storage.db
    rows: list[str] = []
    for table in ("messages", "message_search", "conversation_search_keys", "conversations"):
        rows += [r["t"] for r in await db.fetch(f"SELECT t::text AS t FROM {table} t")]
    dump = "\n".join(rows).casefold()
    assert "alice" in dump and "\\x" in dump  # the dump holds the rows as text
    assert await db.fetchval("SELECT count(*) FROM message_search") > 50  # the index is there
    for text in [*texts, "Kangaroo pyjamas", "temporary wording"]:
        for w in {*text.split(), *words(text)}:
            assert w.casefold() not in dump, w
            for n in range(4, len(w)):  # nor any indexed prefix of four letters or more
                assert w[:n].casefold() not in dump or set(w[:n]) <= set("0123456789abcdef"), w
    assert await bodies(alice, cid, "giraffe") == [texts[0]]
    assert await bodies(alice, cid, "zurich emigres") == [texts[2]]
    assert await bodies(alice, cid, "kangaroo") == ["Kangaroo pyjamas"]
    await alice.close()


async def test_erasure_and_delete_drop_the_index_rows(server: ServerHandle) -> None:
    gone = await connect(server.url, NS, server.token("gone"))
    pal = await connect(server.url, NS, server.token("pal"))
    direct = (await ok(gone, "conversation:open", {"user_id": "pal"}))["id"]
    mine = await send(gone, direct, "1", "orange kites over the harbour")
    theirs = await send(pal, direct, "2", "orange balloons")
    undone = await send(pal, direct, "3", "orange mistake")
    await ok(pal, "message:delete", {"conversation_id": direct, "message_id": undone["id"]})
    assert await index_rows(server, direct, undone["seq"]) == set()
    alone = (await ok(gone, "conversation:create", {"title": "me", "members": ["gone"]}))["id"]
    await send(gone, alone, "1", "an orange note to myself")
    db = server.node.storage.db
    assert await index_rows(server, direct, mine["seq"]) and await index_rows(server, alone)

    async with (
        aiohttp.ClientSession() as s,
        s.delete(
            server.url + "/v1/me",
            json={"reason": "leaving"},
            headers={"Authorization": f"Bearer {server.token('gone')}"},
        ) as r,
    ):
        body = await r.json()
    assert r.status == 200, body
    assert body["data"]["rows"]["message_search (messages they sent)"] > 0
    assert await index_rows(server, direct, mine["seq"]) == set()
    # the conversation left empty went, with its rows and its search key
    assert await index_rows(server, alone) == set()
    assert (
        await db.fetchval(
            "SELECT count(*) FROM conversation_search_keys WHERE conversation_id = $1", alone
        )
        == 0
    )
    # the other member's messages are still found, theirs are not
    assert [m["id"] for m in (await search(pal, direct, "orange"))["messages"]] == [theirs["id"]]
    assert await index_rows(server, direct) == set(
        hashes(await search_key(server, direct), "orange balloons")
    )
    await pal.close()
    await gone.close()


async def test_search_works_after_ours_keys_rotate_and_reindex(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    dsn = await pg_clusters["embedded"].fresh()
    old = make_settings(tmp_path, database_url=dsn, master_key="aa" * 32)
    srv = await start_server(old, free_port())
    a = await connect(srv.url, NS, srv.token("a"))
    cid = (await ok(a, "conversation:open", {"user_id": "b"}))["id"]
    await send(a, cid, "1", "rotation keeps the walrus findable")
    old_key_id = srv.node.keyring.key_id
    await a.close()
    await srv.stop()

    new = make_settings(
        tmp_path, database_url=dsn, master_key="bb" * 32, master_key_previous=["aa" * 32]
    )
    done = subprocess.run(
        [sys.executable, "-m", "app", "keys", "rotate"],
        cwd=ROOT,
        env=settings_env(new),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 1 data key(s)" in done.stdout

    only_new = make_settings(tmp_path, database_url=dsn, master_key="bb" * 32)
    srv = await start_server(only_new, free_port())
    try:
        ids = await srv.node.storage.db.fetch("SELECT key_id FROM conversation_search_keys")
        assert [r["key_id"] for r in ids] == [srv.node.keyring.key_id]
        assert srv.node.keyring.key_id != old_key_id
        b = await connect(srv.url, NS, srv.token("b"))
        assert await bodies(b, cid, "walr") == ["rotation keeps the walrus findable"]
        await send(b, cid, "2", "a walrus after the rotation")  # new rows, same search key
        assert await bodies(b, cid, "walrus") == [
            "a walrus after the rotation",
            "rotation keeps the walrus findable",
        ]

        # an index lost (or older than the messages) is rebuilt by `ours search reindex`
        db = srv.node.storage.db
        before = await index_rows(srv, cid)
        await db.execute("DELETE FROM message_search WHERE conversation_id = $1", cid)
        assert await bodies(b, cid, "walrus") == []
        done = subprocess.run(
            [sys.executable, "-m", "app", "search", "reindex"],
            cwd=ROOT,
            env=settings_env(only_new),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "re-indexed 2 message(s) in 1 conversation(s)" in done.stdout
        assert await index_rows(srv, cid) == before
        assert len(await bodies(b, cid, "walrus")) == 2
        await b.close()
    finally:
        await srv.stop()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_js_client_searches(server: ServerHandle) -> None:
    """The official socket.io-client sends `message:search` and pages with `before_seq`."""
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(server.url, NS, {"token": server.token("ana")})
        b, _ = await js.connect(server.url, NS, {"token": server.token("ben")})
        cid = (await js.emit(a, "conversation:open", {"user_id": "ben"}))["data"]["id"]
        for i, body in enumerate(["Dîner demain ?", "dinner tomorrow at 8", "no plans", "DINNER!"]):
            ack = await js.emit(
                a, "message:send", {"conversation_id": cid, "client_msg_id": f"m{i}", "body": body}
            )
            assert ack["ok"], ack
        first = await js.emit(
            b, "message:search", {"conversation_id": cid, "query": "din", "limit": 2}
        )
        assert [m["body"] for m in first["data"]["messages"]] == ["DINNER!", "dinner tomorrow at 8"]
        rest = await js.emit(
            b,
            "message:search",
            {
                "conversation_id": cid,
                "query": "din",
                "before_seq": first["data"]["next_before_seq"],
            },
        )
        assert [m["body"] for m in rest["data"]["messages"]] == ["Dîner demain ?"]
        assert rest["data"]["next_before_seq"] is None
        bad = await js.emit(b, "message:search", {"conversation_id": cid, "query": ""})
        assert bad["error"]["code"] == "bad_request"
