"""What people expect of a conversation on /messages: reactions (aggregated, idempotent, told to
the room, in history, exported and erased), replies that show the message they quote (also once
it is deleted), and seen-by from the members' cursors. Real servers, real clients (python and
the official JS socket.io-client)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from messaging.extras import EXCERPT
from messaging.reactions import MAX_DISTINCT, is_emoji
from tests import jsclient
from tests.helpers import Client, ServerHandle, connect, err, ok

NS = "/messages"


async def send(c: Client, cid: str, cmid: str, body: str, reply_to: str | None = None) -> Any:
    data = {"conversation_id": cid, "client_msg_id": cmid, "body": body}
    if reply_to:
        data["reply_to"] = reply_to
    return await ok(c, "message:send", data)


def react(cid: str, mid: str, emoji: str) -> dict[str, str]:
    return {"conversation_id": cid, "message_id": mid, "emoji": emoji}


def by_id(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in page["messages"]}


def test_emoji_validation() -> None:
    for good in ["👍", "❤️", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "#️⃣", "🇩🇪", "🧑🏽‍💻", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "☕"]:
        assert is_emoji(good), good
    for bad in [
        "",
        "a",
        "1",
        "ok",
        "👍👍",
        "👍 ",
        "🇩",
        "\u200d",
        "👍\u200d",
        "<b>",
        "🇩🇪🇫🇷",
        "\ufe0f",
    ]:
        assert not is_emoji(bad), bad


async def test_reactions_from_three_users_aggregate(server: ServerHandle) -> None:
    ann = await connect(server.url, NS, server.token("ann"))
    ben = await connect(server.url, NS, server.token("ben"))
    cat = await connect(server.url, NS, server.token("cat"))
    dov = await connect(server.url, NS, server.token("dov"))  # watches, never reacts
    eve = await connect(server.url, NS, server.token("eve"))  # not a member
    cid = (await ok(ann, "conversation:create", {"title": "C", "members": ["ben", "cat", "dov"]}))[
        "id"
    ]
    m1 = (await send(ann, cid, "1", "dinner at eight?"))["id"]
    m2 = (await send(ben, cid, "2", "sure"))["id"]

    a = await ok(ben, "message:react", react(cid, m1, "👍"))
    assert a == {
        "conversation_id": cid,
        "message_id": m1,
        "seq": 1,
        "reactions": {"👍": 1},
        "mine": ["👍"],
        "changed": True,
    }
    assert (await ok(cat, "message:react", react(cid, m1, "👍")))["reactions"] == {"👍": 2}
    a = await ok(ann, "message:react", react(cid, m1, "❤️"))
    assert a["reactions"] == {"👍": 2, "❤️": 1} and a["mine"] == ["❤️"]
    # reacting again with the same emoji changes nothing and tells nobody
    again = await ok(ben, "message:react", react(cid, m1, "👍"))
    assert again["changed"] is False and again["reactions"] == {"👍": 2, "❤️": 1}
    # taking back what you never gave changes nothing either
    assert (await ok(ben, "message:unreact", react(cid, m1, "❤️")))["changed"] is False
    gone = await ok(cat, "message:unreact", react(cid, m1, "👍"))
    assert gone["reactions"] == {"👍": 1, "❤️": 1} and gone["mine"] == [] and gone["changed"]

    # the room saw each change, in order, and only the changes: the 4th is cat's unreact
    told = await dov.wait_for("message:reacted", 4)
    assert [(t["user_id"], t["emoji"], t["added"], t["reactions"]) for t in told] == [
        ("ben", "👍", True, {"👍": 1}),
        ("cat", "👍", True, {"👍": 2}),
        ("ann", "❤️", True, {"👍": 2, "❤️": 1}),
        ("cat", "👍", False, {"👍": 1, "❤️": 1}),
    ]
    assert all(t["conversation_id"] == cid and t["message_id"] == m1 for t in told)
    assert all(t["seq"] == 1 for t in told)
    await ann.wait_for("message:reacted", 4)  # the reactor's own sockets are told too

    # history: the aggregate, and each viewer's own
    page = by_id(await ok(ben, "message:history", {"conversation_id": cid}))
    assert page[m1]["reactions"] == {"👍": 1, "❤️": 1} and page[m1]["my_reactions"] == ["👍"]
    assert "reactions" not in page[m2] and "my_reactions" not in page[m2]
    page = by_id(await ok(cat, "message:history", {"conversation_id": cid}))
    assert page[m1]["my_reactions"] == []
    page = by_id(await ok(ann, "message:history", {"conversation_id": cid}))
    assert page[m1]["my_reactions"] == ["❤️"]

    # refused: not a member, bad emoji, no such message
    assert await err(eve, "message:react", react(cid, m1, "👍")) == "forbidden"
    assert await err(eve, "message:unreact", react(cid, m1, "👍")) == "forbidden"
    for bad in ["a", "👍👍", "", "👍" * 40, "<script>"]:
        assert await err(ben, "message:react", react(cid, m1, bad)) == "bad_request", bad
    bogus = "00000000-0000-4000-8000-000000000000"
    assert await err(ben, "message:react", react(cid, bogus, "👍")) == "not_found"
    assert await err(ben, "message:react", {**react(cid, m1, "👍"), "user_id": "x"}) == (
        "bad_request"
    )

    # a cap on different emoji per message
    emoji = [chr(0x1F600 + i) for i in range(MAX_DISTINCT + 1)]
    for e in emoji[:MAX_DISTINCT]:
        await ok(cat, "message:react", react(cid, m2, e))
    assert await err(dov, "message:react", react(cid, m2, emoji[-1])) == "conflict"
    same = await ok(dov, "message:react", react(cid, m2, emoji[0]))  # a present one still counts
    assert same["reactions"][emoji[0]] == 2 and len(same["reactions"]) == MAX_DISTINCT

    # a deleted message loses its reactions and takes no new ones
    await ok(ann, "message:delete", {"conversation_id": cid, "message_id": m1})
    assert await err(ben, "message:react", react(cid, m1, "🎉")) == "not_found"
    assert await err(ben, "message:unreact", react(cid, m1, "👍")) == "not_found"
    page = by_id(await ok(ben, "message:history", {"conversation_id": cid}))
    assert page[m1]["deleted"] is True and "reactions" not in page[m1]
    db = server.node.storage.db
    assert (
        await db.fetchval("SELECT count(*) FROM message_reactions WHERE message_id = $1", m1) == 0
    )
    for c in (ann, ben, cat, dov, eve):
        await c.close()


async def test_concurrent_reactions_keep_the_cap_and_count_once(server: ServerHandle) -> None:
    users = [f"u{i}" for i in range(MAX_DISTINCT + 10)]
    own = await connect(server.url, NS, server.token("own"))
    cid = (await ok(own, "conversation:create", {"title": "C", "members": users}))["id"]
    mid = (await send(own, cid, "1", "react!"))["id"]
    clients = [await connect(server.url, NS, server.token(u)) for u in users]
    emoji = [chr(0x1F600 + i) for i in range(len(users))]
    acks = await asyncio.gather(
        *(c.call("message:react", react(cid, mid, e)) for c, e in zip(clients, emoji, strict=True))
    )
    assert sum(a["ok"] for a in acks) == MAX_DISTINCT
    assert {a["error"]["code"] for a in acks if not a["ok"]} == {"conflict"}
    # one user, an emoji already there, many times at once: one reaction, one change told
    good = [(c, u, e) for c, u, e, a in zip(clients, users, emoji, acks, strict=True) if a["ok"]]
    (first, who, _), (_, _, theirs) = good[0], good[1]
    again = await asyncio.gather(
        *(first.call("message:react", react(cid, mid, theirs)) for _ in range(10))
    )
    assert all(a["ok"] for a in again), again
    assert sum(a["data"]["changed"] for a in again) == 1
    told = await own.wait_for("message:reacted", MAX_DISTINCT + 1)
    mine = [t for t in told if t["user_id"] == who and t["emoji"] == theirs]
    assert len(mine) == 1 and mine[0]["reactions"][theirs] == 2
    page = by_id(await ok(own, "message:history", {"conversation_id": cid}))
    assert len(page[mid]["reactions"]) == MAX_DISTINCT
    assert sum(page[mid]["reactions"].values()) == MAX_DISTINCT + 1
    for c in (own, *clients):
        await c.close()


async def test_a_late_member_cannot_react_to_what_came_before_them(server: ServerHandle) -> None:
    own = await connect(server.url, NS, server.token("own"))
    cid = (await ok(own, "conversation:create", {"title": "C", "members": ["x"]}))["id"]
    early = (await send(own, cid, "1", "before you came"))["id"]
    await ok(own, "conversation:add", {"conversation_id": cid, "user_id": "late"})
    late = await connect(server.url, NS, server.token("late"))
    assert await err(late, "message:react", react(cid, early, "👍")) == "not_found"
    after = (await send(own, cid, "2", "welcome"))["id"]
    assert (await ok(late, "message:react", react(cid, after, "👋")))["reactions"] == {"👋": 1}
    await own.close()
    await late.close()


async def test_reply_shows_the_message_it_quotes(server: ServerHandle) -> None:
    ann = await connect(server.url, NS, server.token("ann"))
    ben = await connect(server.url, NS, server.token("ben"))
    cid = (await ok(ann, "conversation:open", {"user_id": "ben"}))["id"]
    long_body = "shall we " + "meet " * 40 + "tomorrow?"
    q = await send(ann, cid, "q", long_body)
    short = await send(ann, cid, "s", "bring wine")
    r1 = await send(ben, cid, "r1", "yes!", reply_to=q["id"])
    (new,) = await ann.wait_for("message:new")
    assert new["id"] == r1["id"] and new["reply_to"] == q["id"]
    assert new["reply"]["id"] == q["id"] and new["reply"]["seq"] == 1
    assert new["reply"]["sender_id"] == "ann" and new["reply"]["kind"] == "text"
    assert new["reply"]["deleted"] is False
    assert new["reply"]["excerpt"].endswith("…") and len(new["reply"]["excerpt"]) <= EXCERPT + 1
    assert long_body.startswith(new["reply"]["excerpt"][:-1])
    r2 = await send(ben, cid, "r2", "red or white?", reply_to=short["id"])
    page = by_id(await ok(ann, "message:history", {"conversation_id": cid}))
    assert page[r2["id"]]["reply"] == {
        "id": short["id"],
        "seq": 2,
        "sender_id": "ann",
        "kind": "text",
        "excerpt": "bring wine",
        "deleted": False,
    }
    assert "reply" not in page[q["id"]]  # not a reply
    # the quote follows the quoted message: edited, then deleted
    await ok(
        ann, "message:edit", {"conversation_id": cid, "message_id": short["id"], "body": "wine!"}
    )
    page = by_id(await ok(ben, "message:history", {"conversation_id": cid}))
    assert page[r2["id"]]["reply"]["excerpt"] == "wine!"
    await ok(ann, "message:delete", {"conversation_id": cid, "message_id": short["id"]})
    page = by_id(await ok(ben, "message:history", {"conversation_id": cid}))
    assert page[r2["id"]]["reply"] == {
        "id": short["id"],
        "seq": 2,
        "sender_id": "ann",
        "kind": "text",
        "excerpt": None,
        "deleted": True,
    }
    assert page[r1["id"]]["reply"]["deleted"] is False  # the other quote is untouched
    # a reply to a deleted message says so in message:new too
    await send(ben, cid, "r3", "oh well", reply_to=short["id"])
    news = await ann.wait_for("message:new", 3)
    assert news[-1]["reply"]["deleted"] is True and news[-1]["reply"]["excerpt"] is None
    # nothing of the quote is stored in plaintext
    db = server.node.storage.db
    for r in await db.fetch("SELECT body FROM messages WHERE body IS NOT NULL"):
        assert b"meet" not in bytes(r["body"]) and b"wine" not in bytes(r["body"])
    await ann.close()
    await ben.close()


class CountingConn:
    """The pool, counting the queries made through it."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.queries: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.queries.append(sql)
        return await self.pool.fetch(sql, *args)


async def test_a_history_page_fetches_its_quotes_in_one_query(server: ServerHandle) -> None:
    ann = await connect(server.url, NS, server.token("ann"))
    cid = (await ok(ann, "conversation:open", {"user_id": "ben"}))["id"]
    originals = [(await send(ann, cid, f"o{i}", f"original {i}"))["id"] for i in range(12)]
    for i, mid in enumerate(originals):
        await send(ann, cid, f"r{i}", f"reply {i}", reply_to=mid)
    await ok(ann, "message:react", react(cid, originals[0], "👍"))
    messaging = server.features.messaging
    page = await messaging.service.messages.history("ann", cid, None, 24)
    messages = [
        {k: v for k, v in m.items() if k not in ("reply", "reactions", "my_reactions")}
        for m in page["messages"]
    ]
    counting = CountingConn(server.node.storage.db)
    key = await messaging.keys.key(cid)
    await messaging.service.messages.extras.add(cid, key, messages, viewer="ann", conn=counting)
    assert len(counting.queries) == 2  # the page's reactions, the page's quoted messages
    quotes = {m["id"]: m["reply"]["excerpt"] for m in messages if "reply" in m}
    assert len(quotes) == 12 and set(quotes.values()) == {f"original {i}" for i in range(12)}
    assert messages == page["messages"]  # what history sends
    await ann.close()


async def test_seen_by_lists_the_members_whose_cursor_passed(server: ServerHandle) -> None:
    names = ["m1", "m2", "m3", "m4"]
    own = await connect(server.url, NS, server.token("own"))
    cid = (await ok(own, "conversation:create", {"title": "Circle", "members": names}))["id"]
    members = {n: await connect(server.url, NS, server.token(n)) for n in names}
    sent = [await send(own, cid, str(i), f"news {i}") for i in range(1, 4)]
    await send(members["m4"], cid, "m4", "my own")  # seq 4, by m4
    await ok(members["m1"], "message:read", {"conversation_id": cid, "seq": 4})
    await ok(members["m2"], "message:read", {"conversation_id": cid, "seq": 2})
    await ok(members["m3"], "message:delivered", {"conversation_id": cid, "seq": 3})
    await ok(own, "message:read", {"conversation_id": cid, "seq": 4})
    # a member added now joins after every message so far: never listed for them
    await ok(own, "conversation:add", {"conversation_id": cid, "user_id": "m5"})

    at2 = await ok(members["m3"], "message:seen_by", {"conversation_id": cid, "seq": 2})
    assert at2 == {
        "conversation_id": cid,
        "seq": 2,
        "message_id": sent[1]["id"],
        "sender_id": "own",
        "seen_by": [{"user_id": "m1", "read_seq": 4}, {"user_id": "m2", "read_seq": 2}],
        "delivered_to": [{"user_id": "m3", "delivered_seq": 3}],
        "of": 4,  # m1..m4: not its sender, not m5
    }
    at3 = await ok(own, "message:seen_by", {"conversation_id": cid, "seq": 3})
    assert [s["user_id"] for s in at3["seen_by"]] == ["m1"]
    assert [d["user_id"] for d in at3["delivered_to"]] == ["m3"]
    # m4's own message: its sender is left out, the owner (who read it) is in
    at4 = await ok(own, "message:seen_by", {"conversation_id": cid, "seq": 4})
    assert at4["sender_id"] == "m4"
    assert {s["user_id"] for s in at4["seen_by"]} == {"m1", "own"}
    assert at4["delivered_to"] == [] and at4["of"] == 4
    # a read moves the list
    await ok(members["m2"], "message:read", {"conversation_id": cid, "seq": 3})
    at3 = await ok(own, "message:seen_by", {"conversation_id": cid, "seq": 3})
    assert [s["user_id"] for s in at3["seen_by"]] == ["m1", "m2"]

    eve = await connect(server.url, NS, server.token("eve"))
    assert await err(eve, "message:seen_by", {"conversation_id": cid, "seq": 1}) == "forbidden"
    assert await err(own, "message:seen_by", {"conversation_id": cid, "seq": 99}) == "not_found"
    assert await err(own, "message:seen_by", {"conversation_id": cid, "seq": 0}) == "bad_request"
    m5 = await connect(server.url, NS, server.token("m5"))
    assert await err(m5, "message:seen_by", {"conversation_id": cid, "seq": 2}) == "not_found"
    for c in (own, eve, m5, *members.values()):
        await c.close()


async def http(server: ServerHandle, method: str, path: str, token: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["data"]


async def test_reactions_are_exported_and_erased_with_their_user(server: ServerHandle) -> None:
    gone = await connect(server.url, NS, server.token("leaver"))
    pal = await connect(server.url, NS, server.token("pal"))
    cid = (await ok(gone, "conversation:open", {"user_id": "pal"}))["id"]
    theirs = (await send(pal, cid, "p", "a photo of my cat"))["id"]
    mine = (await send(gone, cid, "g", "my last words"))["id"]
    await ok(gone, "message:react", react(cid, theirs, "😻"))
    await ok(pal, "message:react", react(cid, theirs, "😻"))
    await ok(pal, "message:react", react(cid, mine, "😢"))

    archive = await http(server, "GET", "/v1/me/export", server.token("leaver"))
    assert [(r["message_id"], r["emoji"], r["seq"]) for r in archive["reactions"]] == [
        (theirs, "😻", 1)
    ]
    assert archive["reactions"][0]["conversation_id"] == cid
    exported = {m["id"]: m for m in archive["messages"][cid]}
    assert exported[theirs]["reactions"] == {"😻": 2} and exported[theirs]["my_reactions"] == ["😻"]

    erased = await http(server, "DELETE", "/v1/me", server.token("leaver"), {"reason": "bye"})
    # theirs on pal's message, and pal's on the message they sent (tombstoned)
    assert erased["rows"]["message_reactions"] == 2
    page = by_id(await ok(pal, "message:history", {"conversation_id": cid}))
    assert page[theirs]["reactions"] == {"😻": 1}  # the count dropped
    assert page[mine]["deleted"] is True and "reactions" not in page[mine]
    db = server.node.storage.db
    assert await db.fetchval("SELECT count(*) FROM message_reactions WHERE user_id = 'leaver'") == 0
    await pal.close()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_js_clients_react_and_reply(server: ServerHandle) -> None:
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(server.url, NS, {"token": server.token("ana")})
        b, _ = await js.connect(server.url, NS, {"token": server.token("ben")})
        cid = (await js.emit(a, "conversation:open", {"user_id": "ben"}))["data"]["id"]
        sent = await js.emit(
            a, "message:send", {"conversation_id": cid, "client_msg_id": "a1", "body": "tea?"}
        )
        mid = sent["data"]["id"]
        ack = await js.emit(b, "message:react", react(cid, mid, "☕"))
        assert ack["ok"] and ack["data"]["reactions"] == {"☕": 1}
        (told,) = await js.wait(a, "message:reacted")
        assert told["message_id"] == mid and told["user_id"] == "ben"
        assert told["reactions"] == {"☕": 1} and told["added"] is True
        bad = await js.emit(b, "message:react", react(cid, mid, "tea"))
        assert bad["ok"] is False and bad["error"]["code"] == "bad_request"
        await js.emit(
            b,
            "message:send",
            {"conversation_id": cid, "client_msg_id": "b1", "body": "yes", "reply_to": mid},
        )
        (reply,) = await js.wait(a, "message:new")
        assert reply["reply"]["id"] == mid and reply["reply"]["excerpt"] == "tea?"
        await js.emit(a, "message:read", {"conversation_id": cid, "seq": 2})
        seen = await js.emit(b, "message:seen_by", {"conversation_id": cid, "seq": 2})
        assert seen["data"]["seen_by"] == [{"user_id": "ana", "read_seq": 2}]
