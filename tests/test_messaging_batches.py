"""message:send in micro-batches (messaging/messages.py `_send_batch`, messaging/group_commit.py):
sends that arrive together share one transaction, and each still gets what a lone send gets —
a gap-free seq, one row per client_msg_id, its own error, `message:new` before its ack."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from messaging.group_commit import GroupCommit
from messaging.messages import Messages, Posted, Send
from server.errors import ApiError
from tests.helpers import ServerHandle, connect, ok

NS = "/messages"


def messages_of(server: ServerHandle) -> Messages:
    return server.features.messaging.service.messages


def record_batches(messages: Messages) -> list[int]:
    """The size of every batch the writer takes from now on (it still writes them)."""
    sizes: list[int] = []
    write = messages._sends.write

    async def recording(items: list[Send]) -> Any:
        sizes.append(len(items))
        return await write(items)

    messages._sends.write = recording
    return sizes


async def rows(server: ServerHandle, conv_id: str) -> list[Any]:
    return list(
        await server.node.storage.db.fetch(
            "SELECT seq, sender_id, client_msg_id FROM messages WHERE conversation_id = $1"
            " ORDER BY seq",
            conv_id,
        )
    )


async def test_group_commit_takes_what_queued_while_a_batch_was_written() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        await asyncio.sleep(0)
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(write, max_batch=4)
    first = asyncio.ensure_future(gc.submit(0))
    await asyncio.sleep(0)  # the writer starts at once with the lone call
    rest = [asyncio.ensure_future(gc.submit(i)) for i in range(1, 7)]
    got = await asyncio.gather(first, *rest, return_exceptions=True)
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert got[:3] == [0, 10, 20] and got[4:] == [40, 50, 60]
    assert isinstance(got[3], ValueError)  # one item's error fails that item alone


async def test_concurrent_sends_from_several_clients_get_gap_free_seq_once_each(
    server: ServerHandle,
) -> None:
    users = ["ba", "bb", "bc", "bd"]
    clients = {u: await connect(server.url, NS, server.token(u)) for u in users}
    conv = await ok(clients["ba"], "conversation:create", {"title": "t", "members": users[1:]})
    cid = conv["id"]
    sizes = record_batches(messages_of(server))
    per_sender = 25
    senders = users[:3]
    calls = [
        clients[u].call(
            "message:send", {"conversation_id": cid, "client_msg_id": f"{u}-{i}", "body": f"{i}"}
        )
        for i in range(per_sender)
        for u in senders
    ]
    acks = await asyncio.gather(*calls)
    assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]]
    n = per_sender * len(senders)
    assert sorted(a["data"]["seq"] for a in acks) == list(range(1, n + 1))
    assert sum(sizes) == n
    # the database: one row per client_msg_id, seqs 1..n (the order of one socket's events that
    # are in flight together is the server's: each is handled in its own task)
    got = await rows(server, cid)
    assert [r["seq"] for r in got] == list(range(1, n + 1))
    assert len({(r["sender_id"], r["client_msg_id"]) for r in got}) == n
    for u in senders:
        mine = [int(r["client_msg_id"].split("-")[1]) for r in got if r["sender_id"] == u]
        assert sorted(mine) == list(range(per_sender))
    # every member got every message of the others exactly once, in seq order
    reader = clients["bd"]
    news = await reader.wait_for("message:new", count=n, timeout=10)
    assert [m["seq"] for m in news] == list(range(1, n + 1))
    for u in senders:
        others = n - per_sender
        news = await clients[u].wait_for("message:new", count=others, timeout=10)
        seqs = [m["seq"] for m in news]
        assert len(seqs) == len(set(seqs)) == others and seqs == sorted(seqs)
    for c in clients.values():
        await c.close()


async def test_duplicate_client_msg_id_inside_one_batch_posts_once(server: ServerHandle) -> None:
    a = await connect(server.url, NS, server.token("da"))
    b = await connect(server.url, NS, server.token("db"))
    cid = (await ok(a, "conversation:open", {"user_id": "db"}))["id"]
    messages = messages_of(server)
    sizes = record_batches(messages)

    def send(client_msg_id: str, body: str) -> Any:
        return messages.send("da", cid, client_msg_id, body, None, None)

    got = await asyncio.gather(send("x", "one"), send("y", "two"), send("x", "one again"))
    assert sizes == [3]  # one batch
    first, second, retry = got
    assert (first["seq"], second["seq"]) == (1, 2)
    assert "duplicate" not in first
    assert retry == {**first, "duplicate": True}
    # a retry in a later batch answers the same
    later = await send("x", "once more")
    assert later == {**first, "duplicate": True}
    assert [(r["seq"], r["client_msg_id"]) for r in await rows(server, cid)] == [
        (1, "x"),
        (2, "y"),
    ]
    news = await b.wait_for("message:new", count=2)
    await asyncio.sleep(0.2)  # nothing more arrives for the retries
    assert [m["body"] for m in b.received["message:new"]] == ["one", "two"]
    assert [m["seq"] for m in news] == [1, 2]
    await a.close()
    await b.close()


async def test_a_bad_send_fails_alone_in_its_batch(server: ServerHandle) -> None:
    a = await connect(server.url, NS, server.token("fa"))
    b = await connect(server.url, NS, server.token("fb"))
    c = await connect(server.url, NS, server.token("fc"))
    cid = (await ok(a, "conversation:open", {"user_id": "fb"}))["id"]
    blocked = (await ok(a, "conversation:open", {"user_id": "fc"}))["id"]
    others = (await ok(b, "conversation:open", {"user_id": "fc"}))["id"]
    await ok(c, "user:block", {"user_id": "fa"})
    messages = messages_of(server)
    sizes = record_batches(messages)

    def send(conv: str, cmid: str, **kw: Any) -> Any:
        return messages.send(
            "fa",
            conv,
            cmid,
            cmid,
            kw.get("reply_to"),
            None,
            kw.get("attachments"),
        )

    got: list[Posted | BaseException] = await asyncio.gather(
        send(cid, "ok1"),
        send(others, "not-a-member"),
        send(blocked, "blocked"),
        send(cid, "bad-reply", reply_to=str(uuid.uuid4())),
        send(cid, "bad-attachment", attachments=[str(uuid.uuid4())]),
        send(str(uuid.uuid4()), "no-such-conversation"),
        send(cid, "ok2"),
        return_exceptions=True,
    )
    assert sizes == [7]
    codes = [g.code if isinstance(g, ApiError) else g["seq"] for g in got]  # type: ignore[index]
    assert codes == [1, "forbidden", "forbidden", "not_found", "forbidden", "forbidden", 2]
    assert [r["client_msg_id"] for r in await rows(server, cid)] == ["ok1", "ok2"]
    assert await rows(server, blocked) == [] and await rows(server, others) == []
    news = await b.wait_for("message:new", count=2)
    assert [(m["seq"], m["body"]) for m in news] == [(1, "ok1"), (2, "ok2")]
    # the failed send takes no seq: the next one continues the count
    assert (await send(cid, "ok3"))["seq"] == 3
    await asyncio.sleep(0.2)
    assert c.received["message:new"] == []
    for x in (a, b, c):
        await x.close()


async def test_delivered_to_the_other_member_before_the_ack(server: ServerHandle) -> None:
    n = 2
    a = await connect(server.url, NS, server.token("oa"))
    b = await connect(server.url, NS, server.token("ob"))
    cid = (await ok(a, "conversation:open", {"user_id": "ob"}))["id"]
    messages = messages_of(server)
    order: list[str] = []
    emit = messages.fanout.emit

    async def noting(event: str, data: Any, **kw: Any) -> None:
        order.append(f"emit {data.get('seq')}")
        await emit(event, data, **kw)

    messages.fanout.emit = noting  # type: ignore[method-assign]

    async def send(i: int) -> None:
        await messages.send("oa", cid, f"m{i}", "hi", None, None)
        order.append(f"ack {i + 1}")

    await asyncio.gather(*(send(i) for i in range(n)))
    assert order == ["emit 1", "emit 2", "ack 1", "ack 2"]
    await b.wait_for("message:new", count=n)
    await a.close()
    await b.close()


async def test_receipts_that_arrive_together_are_written_together(server: ServerHandle) -> None:
    a = await connect(server.url, NS, server.token("ra"))
    b = await connect(server.url, NS, server.token("rb"))
    cid = (await ok(a, "conversation:open", {"user_id": "rb"}))["id"]
    for i in range(3):
        await ok(a, "message:send", {"conversation_id": cid, "client_msg_id": f"r{i}", "body": "x"})
    receipts = server.features.messaging.service.receipts
    sizes: list[int] = []
    write = receipts._marks.write

    async def recording(items: list[Any]) -> Any:
        sizes.append(len(items))
        return await write(items)

    receipts._marks.write = recording
    got = await asyncio.gather(
        receipts.mark("rb", cid, 2, "delivered"),
        receipts.mark("rb", cid, 1, "read"),
        receipts.mark("rx", cid, 3, "read"),  # not a member
        receipts.mark("rb", str(uuid.uuid4()), 1, "read"),  # no such conversation
        receipts.mark("rb", cid, 99, "delivered"),  # at most the last message
        return_exceptions=True,
    )
    assert sizes == [5]
    delivered, read, stranger, nowhere, last = got
    assert isinstance(stranger, ApiError) and stranger.code == "forbidden"
    assert isinstance(nowhere, ApiError) and nowhere.code == "not_found"
    # one batch: each answer is the cursor after the batch
    assert delivered == {"conversation_id": cid, "user_id": "rb", "seq": 3, "unread": 2}
    assert read == {"conversation_id": cid, "user_id": "rb", "seq": 1, "unread": 2}
    assert last == {"conversation_id": cid, "user_id": "rb", "seq": 3, "unread": 2}
    told = await a.wait_for("message:delivered", count=2)
    assert {t["seq"] for t in told} == {3}
    (unread,) = await b.wait_for("conversation:unread")
    assert unread == {"conversation_id": cid, "unread": 2, "read_seq": 1}
    row = await server.node.storage.db.fetchrow(
        "SELECT delivered_seq, read_seq FROM conversation_members"
        " WHERE conversation_id = $1 AND user_id = 'rb'",
        cid,
    )
    assert (row["delivered_seq"], row["read_seq"]) == (3, 1)
    await a.close()
    await b.close()
