"""Direct messages and circles on /messages: conversations, ordered gap-free messages,
idempotent retries, history, receipts, typing, encryption at rest, HOURS tips, scheduled notes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from server.crypto import DecryptError, unseal
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings
from tests.helpers import Client, ServerHandle, connect, err, ok, start_server

NS = "/messages"


async def test_direct_conversation_end_to_end(server: ServerHandle) -> None:
    alice = await connect(server.url, NS, server.token("alice"))
    alice2 = await connect(server.url, NS, server.token("alice"))  # a second device
    bob = await connect(server.url, NS, server.token("bob"))
    eve = await connect(server.url, NS, server.token("eve"))

    conv = await ok(alice, "conversation:open", {"user_id": "bob"})
    again = await ok(bob, "conversation:open", {"user_id": "alice"})
    assert conv["id"] == again["id"] and conv["members"] == ["alice", "bob"]
    cid = conv["id"]

    sent = await ok(
        alice, "message:send", {"conversation_id": cid, "client_msg_id": "m1", "body": "hi bob"}
    )
    assert sent["seq"] == 1
    (msg,) = await bob.wait_for("message:new")
    assert msg["body"] == "hi bob" and msg["seq"] == 1 and msg["sender_id"] == "alice"
    (mine,) = await alice2.wait_for("message:new")  # the sender's other device
    assert mine["id"] == sent["id"]
    await asyncio.sleep(0.2)
    assert "message:new" not in alice.received  # not echoed to the sending socket

    # a retry with the same client_msg_id returns the first message and delivers nothing new
    retry = await ok(
        alice, "message:send", {"conversation_id": cid, "client_msg_id": "m1", "body": "hi bob"}
    )
    assert retry["id"] == sent["id"] and retry["duplicate"] is True
    await asyncio.sleep(0.2)
    assert len(bob.received["message:new"]) == 1

    # the third user is refused everywhere
    for event, data in [
        ("message:send", {"conversation_id": cid, "client_msg_id": "x", "body": "let me in"}),
        ("message:history", {"conversation_id": cid}),
        ("message:read", {"conversation_id": cid, "seq": 1}),
        ("typing:start", {"conversation_id": cid}),
    ]:
        assert await err(eve, event, data) == "forbidden"
    assert "message:new" not in eve.received

    # typing: broadcast to the others, debounced, then stop
    assert (await ok(bob, "typing:start", {"conversation_id": cid}))["broadcast"] is True
    assert (await ok(bob, "typing:start", {"conversation_id": cid}))["broadcast"] is False
    (t,) = await alice.wait_for("typing")
    assert t == {"conversation_id": cid, "user_id": "bob", "active": True}
    await ok(bob, "typing:stop", {"conversation_id": cid})
    await alice.wait_for("typing", 2)
    assert alice.received["typing"][1]["active"] is False

    # read receipts and unread counts, the same on every device
    await ok(
        alice, "message:send", {"conversation_id": cid, "client_msg_id": "m2", "body": "second"}
    )
    listed = {c["id"]: c for c in (await ok(bob, "conversation:list"))["conversations"]}
    assert listed[cid]["unread"] == 2
    assert listed[cid]["last_message"]["body"] == "second"
    read = await ok(bob, "message:read", {"conversation_id": cid, "seq": 2})
    assert read["unread"] == 0
    (receipt,) = await alice.wait_for("message:read")
    assert receipt == {"conversation_id": cid, "user_id": "bob", "seq": 2}
    (unread,) = await bob.wait_for("conversation:unread")
    assert unread["unread"] == 0

    # edit and delete (tombstone) reach everyone
    await ok(
        alice, "message:edit", {"conversation_id": cid, "message_id": sent["id"], "body": "hi Bob!"}
    )
    (upd,) = await bob.wait_for("message:updated")
    assert upd["body"] == "hi Bob!" and upd["edited"] is True
    assert (
        await err(
            bob, "message:edit", {"conversation_id": cid, "message_id": sent["id"], "body": "no"}
        )
        == "forbidden"
    )
    await ok(alice, "message:delete", {"conversation_id": cid, "message_id": sent["id"]})
    (gone,) = await bob.wait_for("message:deleted")
    assert gone["id"] == sent["id"]
    hist = await ok(bob, "message:history", {"conversation_id": cid})
    assert [m["seq"] for m in hist["messages"]] == [2, 1]
    assert hist["messages"][1]["deleted"] is True and hist["messages"][1]["body"] is None

    for c in (alice, alice2, bob, eve):
        await c.close()


async def test_history_pages_back_and_seq_is_gap_free_under_concurrency(
    server: ServerHandle,
) -> None:
    a = await connect(server.url, NS, server.token("a"))
    b = await connect(server.url, NS, server.token("b"))
    cid = (await ok(a, "conversation:open", {"user_id": "b"}))["id"]
    sends = [
        c.call(
            "message:send",
            {"conversation_id": cid, "client_msg_id": f"{who}{i}", "body": f"{who} {i}"},
        )
        for i in range(20)
        for who, c in (("a", a), ("b", b))
    ]
    acks = await asyncio.gather(*sends)
    assert sorted(x["data"]["seq"] for x in acks) == list(range(1, 41))
    seen: list[int] = []
    before = None
    while True:
        page = await ok(
            a,
            "message:history",
            {"conversation_id": cid, "limit": 15, **({"before_seq": before} if before else {})},
        )
        seen += [m["seq"] for m in page["messages"]]
        before = page["next_before_seq"]
        if before is None:
            break
    assert seen == list(range(40, 0, -1))
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("event", "data", "code"),
    [
        (
            "message:send",
            {"conversation_id": "not-a-uuid", "client_msg_id": "x", "body": "b"},
            "bad_request",
        ),
        (
            "message:send",
            {"conversation_id": str(uuid.uuid4()), "client_msg_id": "x", "body": ""},
            "bad_request",
        ),
        (
            "message:send",
            {"conversation_id": str(uuid.uuid4()), "client_msg_id": "x", "body": "x" * 4001},
            "bad_request",
        ),
        (
            "message:send",
            {"conversation_id": str(uuid.uuid4()), "client_msg_id": "x", "body": "hi"},
            "forbidden",
        ),
        ("message:history", {"conversation_id": str(uuid.uuid4()), "limit": 101}, "bad_request"),
        ("conversation:open", {"user_id": ""}, "bad_request"),
        ("conversation:create", {"title": "t", "members": []}, "bad_request"),
        (
            "tip:send",
            {"conversation_id": str(uuid.uuid4()), "amount": -1, "client_msg_id": "t"},
            "bad_request",
        ),
        (
            "message:schedule",
            {
                "conversation_id": str(uuid.uuid4()),
                "body": "x",
                "deliver_at": "2030-01-01T00:00:00",
            },
            "bad_request",
        ),
    ],
)
async def test_bad_message_input(server: ServerHandle, event: str, data: Any, code: str) -> None:
    c = await connect(server.url, NS, server.token("u1"))
    assert await err(c, event, data) == code
    assert (await ok(c, "conversation:open", {"user_id": "u2"}))["id"]  # still works
    await c.close()


async def test_circle_of_150_gets_one_message_on_every_device(server: ServerHandle) -> None:
    owner = await connect(server.url, NS, server.token("owner"))
    members = [f"m{i}" for i in range(149)]
    conv = await ok(owner, "conversation:create", {"title": "Circle", "members": members})
    cid = conv["id"]
    assert len(conv["members"]) == 150
    # every member connects after creation (joins on connect) — plus one connected before
    clients: list[Client] = []
    for i in range(0, len(members), 25):  # in batches: 150 handshakes at once time out on 2 cores
        clients += await asyncio.gather(
            *(connect(server.url, NS, server.token(m)) for m in members[i : i + 25])
        )
    second_device = await connect(server.url, NS, server.token("m0"))
    assert (
        await err(owner, "conversation:add", {"conversation_id": cid, "user_id": "m150"})
        == "forbidden"
    )
    await ok(
        owner,
        "message:send",
        {"conversation_id": cid, "client_msg_id": "hello", "body": "hello circle"},
    )
    for c in [*clients, second_device]:
        (m,) = await c.wait_for("message:new", timeout=10)
        assert m["body"] == "hello circle"
    await asyncio.sleep(0.3)
    assert all(len(c.received["message:new"]) == 1 for c in clients)
    too_big = [f"x{i}" for i in range(150)]
    assert (
        await err(owner, "conversation:create", {"title": "Big", "members": too_big}) == "forbidden"
    )
    for c in [owner, *clients, second_device]:
        await c.close()


async def test_members_join_and_leave_rooms_at_once(server: ServerHandle) -> None:
    owner = await connect(server.url, NS, server.token("own"))
    dan = await connect(server.url, NS, server.token("dan"))  # connected before being added
    cid = (await ok(owner, "conversation:create", {"title": "C", "members": ["x"]}))["id"]
    await ok(owner, "conversation:add", {"conversation_id": cid, "user_id": "dan"})
    await ok(
        owner, "message:send", {"conversation_id": cid, "client_msg_id": "1", "body": "welcome"}
    )
    await dan.wait_for("message:new")
    await ok(owner, "conversation:remove", {"conversation_id": cid, "user_id": "dan"})
    await dan.wait_for("conversation:removed")
    await ok(
        owner, "message:send", {"conversation_id": cid, "client_msg_id": "2", "body": "secret"}
    )
    await asyncio.sleep(0.3)
    assert [m["body"] for m in dan.received["message:new"]] == ["welcome"]
    assert await err(dan, "message:history", {"conversation_id": cid}) == "forbidden"
    await owner.close()
    await dan.close()


async def test_rows_hold_no_plaintext_and_moved_ciphertext_fails(server: ServerHandle) -> None:
    a = await connect(server.url, NS, server.token("a"))
    cid = (await ok(a, "conversation:open", {"user_id": "b"}))["id"]
    secret = "the eagle lands at midnight"
    m1 = await ok(a, "message:send", {"conversation_id": cid, "client_msg_id": "1", "body": secret})
    m2 = await ok(
        a, "message:send", {"conversation_id": cid, "client_msg_id": "2", "body": "other"}
    )
    db = server.node.storage.db
    rows = await db.fetch("SELECT * FROM messages")
    for r in rows:
        assert secret.encode() not in bytes(r["body"])
        assert b"other" not in bytes(r["body"])
    conv = await db.fetchrow("SELECT wrapped_key FROM conversations WHERE id = $1", cid)
    key = server.node.keyring.unwrap(conv["wrapped_key"], cid.encode())
    assert len(key) == 32 and key not in bytes(conv["wrapped_key"])
    # copy message 1's ciphertext onto message 2's row: it must not decrypt there
    await db.execute(
        "UPDATE messages SET body = (SELECT body FROM messages WHERE id = $1) WHERE id = $2",
        m1["id"],
        m2["id"],
    )
    moved = await db.fetchval("SELECT body FROM messages WHERE id = $1", m2["id"])
    with pytest.raises(DecryptError):
        unseal(key, moved, f"{cid}|{m2['id']}".encode())
    ack = await a.call("message:history", {"conversation_id": cid})
    assert ack["ok"] is False and ack["error"]["code"] == "internal"
    await a.close()


async def test_50_concurrent_tips_against_a_balance_of_10(server: ServerHandle) -> None:
    await server.features.ledger.service.grant("admin", "tipper", Decimal(10), "grant-1")
    tipper = await connect(server.url, NS, server.token("tipper"))
    creator = await connect(server.url, NS, server.token("creator"))
    cid = (await ok(tipper, "conversation:open", {"user_id": "creator"}))["id"]
    acks = await asyncio.gather(
        *(
            tipper.call("tip:send", {"conversation_id": cid, "amount": 1, "client_msg_id": f"t{i}"})
            for i in range(50)
        )
    )
    good = [a for a in acks if a["ok"]]
    assert len(good) == 10
    assert {a["error"]["code"] for a in acks if not a["ok"]} == {"conflict"}
    assert min(a["data"]["balance"] for a in good) == 0
    # a retry of a tip that went through moves nothing twice
    first_ok = next(i for i, a in enumerate(acks) if a["ok"])
    again = await ok(
        tipper, "tip:send", {"conversation_id": cid, "amount": 1, "client_msg_id": f"t{first_ok}"}
    )
    assert again["duplicate"] is True and again["id"] == acks[first_ok]["data"]["id"]
    db = server.node.storage.db
    assert await db.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM hours_accounts WHERE balance < 0 AND account LIKE 'user:%'"
        )
        == 0
    )
    assert (await ok(tipper, "hours:balance"))["balance"] == 0
    assert (await ok(creator, "hours:balance"))["balance"] == 10
    (listed,) = (await ok(creator, "conversation:list"))["conversations"]
    assert listed["last_message"]["kind"] == "tip" and listed["last_message"]["amount"] == 1
    await creator.wait_for("message:new", 10)
    assert all(m["kind"] == "tip" and m["amount"] == 1 for m in creator.received["message:new"])
    # each tip published hours.tipped for the router
    await asyncio.sleep(0.3)
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'hours.tipped'") == 10
    await tipper.close()
    await creator.close()


async def test_scheduled_note_is_delivered_once_across_a_restart(
    tmp_path: Path, pg_clusters: dict[str, PgCluster], backend: str
) -> None:
    from tests.conftest import REDIS_URL

    cluster = pg_clusters["machine" if backend == "redis" else "embedded"]
    settings: Settings = make_settings(
        tmp_path,
        database_url=await cluster.fresh(),
        redis_url=REDIS_URL if backend == "redis" else None,
        scheduler_poll_interval=0.1,
    )
    port = free_port()
    first = await start_server(settings, port)
    a = await connect(first.url, NS, first.token("lover"))
    cid = (await ok(a, "conversation:open", {"user_id": "beloved"}))["id"]
    at = datetime.now(UTC) + timedelta(seconds=2)
    note = await ok(
        a,
        "message:schedule",
        {"conversation_id": cid, "body": "thinking of you", "deliver_at": at.isoformat()},
    )
    assert note["state"] == "scheduled"
    cancel_me = await ok(
        a,
        "message:schedule",
        {"conversation_id": cid, "body": "never", "deliver_at": at.isoformat()},
    )
    await ok(a, "message:cancel", {"id": cancel_me["id"]})
    await a.close()
    await first.stop()  # the server is down when the note falls due
    await asyncio.sleep(2.5)
    second = await start_server(settings, port)
    try:
        b = await connect(second.url, NS, second.token("beloved"))
        hist: dict[str, Any] = {}
        for _ in range(100):
            hist = await ok(b, "message:history", {"conversation_id": cid})
            if hist["messages"]:
                break
            await asyncio.sleep(0.05)
        assert [m["body"] for m in hist["messages"]] == ["thinking of you"]
        assert hist["messages"][0]["kind"] == "note"
        await ok(b, "message:delivered", {"conversation_id": cid, "seq": 1})
        a2 = await connect(second.url, NS, second.token("lover"))
        notes = {n["id"]: n for n in (await ok(a2, "message:scheduled"))["scheduled"]}
        assert notes[note["id"]]["state"] == "sent"
        assert notes[note["id"]]["recipients"] == [{"user_id": "beloved", "state": "delivered"}]
        assert notes[cancel_me["id"]]["state"] == "cancelled"
        await ok(b, "message:read", {"conversation_id": cid, "seq": 1})
        notes = {n["id"]: n for n in (await ok(a2, "message:scheduled"))["scheduled"]}
        assert notes[note["id"]]["recipients"] == [{"user_id": "beloved", "state": "read"}]
        await asyncio.sleep(0.5)
        assert len((await ok(b, "message:history", {"conversation_id": cid}))["messages"]) == 1
        await b.close()
        await a2.close()
    finally:
        await second.stop()


async def test_key_rotation_rewraps_without_losing_messages(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    dsn = await pg_clusters["embedded"].fresh()
    old = make_settings(tmp_path, database_url=dsn, master_key="aa" * 32)
    srv = await start_server(old, free_port())
    a = await connect(srv.url, NS, srv.token("a"))
    cid = (await ok(a, "conversation:open", {"user_id": "b"}))["id"]
    await ok(a, "message:send", {"conversation_id": cid, "client_msg_id": "1", "body": "before"})
    await a.close()
    await srv.stop()
    new = make_settings(
        tmp_path, database_url=dsn, master_key="bb" * 32, master_key_previous=["aa" * 32]
    )
    srv = await start_server(new, free_port())
    try:
        assert await srv.features.messaging.keys.rotate() == 1
        row = await srv.node.storage.db.fetchrow(
            "SELECT key_id FROM conversations WHERE id = $1", cid
        )
        assert row["key_id"] == srv.node.keyring.key_id
    finally:
        await srv.stop()
    only_new = make_settings(tmp_path, database_url=dsn, master_key="bb" * 32)
    srv = await start_server(only_new, free_port())
    try:
        b = await connect(srv.url, NS, srv.token("b"))
        hist = await ok(b, "message:history", {"conversation_id": cid})
        assert hist["messages"][0]["body"] == "before"
        await b.close()
    finally:
        await srv.stop()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_two_js_clients_chat(server: ServerHandle) -> None:
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(server.url, NS, {"token": server.token("ana")})
        b, _ = await js.connect(server.url, NS, {"token": server.token("ben")})
        c, _ = await js.connect(server.url, NS, {"token": server.token("cy")})
        conv = (await js.emit(a, "conversation:open", {"user_id": "ben"}))["data"]
        cid = conv["id"]
        for i in range(5):
            ack = await js.emit(
                a,
                "message:send",
                {"conversation_id": cid, "client_msg_id": f"a{i}", "body": f"hello {i}"},
            )
            assert ack["ok"] and ack["data"]["seq"] == 2 * i + 1
            ack = await js.emit(
                b,
                "message:send",
                {"conversation_id": cid, "client_msg_id": f"b{i}", "body": f"hey {i}"},
            )
            assert ack["ok"] and ack["data"]["seq"] == 2 * i + 2
        got = await js.wait(b, "message:new", 5)
        assert [m["body"] for m in got] == [f"hello {i}" for i in range(5)]
        await js.emit(b, "typing:start", {"conversation_id": cid})
        (typing,) = await js.wait(a, "typing")
        assert typing["user_id"] == "ben" and typing["active"] is True
        await js.emit(b, "message:read", {"conversation_id": cid, "seq": 9})
        (receipt,) = await js.wait(a, "message:read")
        assert receipt["seq"] == 9
        refused = await js.emit(
            c, "message:send", {"conversation_id": cid, "client_msg_id": "x", "body": "me too"}
        )
        assert refused["error"]["code"] == "forbidden"
        page1 = (await js.emit(a, "message:history", {"conversation_id": cid, "limit": 4}))["data"]
        assert [m["seq"] for m in page1["messages"]] == [10, 9, 8, 7]
        page2 = (
            await js.emit(
                a,
                "message:history",
                {"conversation_id": cid, "limit": 4, "before_seq": page1["next_before_seq"]},
            )
        )["data"]
        assert [m["seq"] for m in page2["messages"]] == [6, 5, 4, 3]
