"""Connection state recovery: every room event carries an offset; a client that comes back
within the window gets everything it missed, in order, exactly once — on the same process or
another one — and is told `recovered: false` when that cannot be promised."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests import jsclient
from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings
from tests.helpers import Client, ServerHandle, connect, spawn_server, start_server


def created(n: int, room: str = "zone:rec") -> dict[str, Any]:
    return {
        "type": "content.created",
        "subjects": [room],
        "payload": {"content_id": f"c{n}", "kind": "post", "title": str(n)},
    }


async def publish_many(
    server: ServerHandle, start: int, count: int, room: str = "zone:rec"
) -> None:
    for n in range(start, start + count):
        status, _ = await server.publish(created(n, room))
        assert status == 202


async def settled(server: ServerHandle) -> None:
    """Wait until the bus consumers handled everything published so far."""
    for _ in range(200):
        if not any((await server.node.bus.lag()).values()):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("bus did not settle")


def titles(c: Client) -> list[int]:
    return [int(e["payload"]["title"]) for e in c.received["content.created"]]


async def last_offset(c: Client, room: str) -> str:
    return str(c.meta["content.created"][-1]["offsets"][room])


async def test_every_room_event_carries_a_growing_offset(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("u"))
    join = await c.call("room:join", {"room": "zone:rec"})
    await publish_many(server, 0, 3)
    await c.wait_for("content.created", 3)
    offsets = [m["offsets"]["zone:rec"] for m in c.meta["content.created"]]
    epoch = join["data"]["offset"].rsplit(":", 1)[0]
    assert all(o.rsplit(":", 1)[0] == epoch for o in offsets)
    assert len(set(offsets)) == 3
    await c.close()


async def test_a_burst_fans_out_in_order_with_offsets_that_replay(server: ServerHandle) -> None:
    """Events published together queue up behind the fan-out consumer and go out as a batch
    (on Redis: one pipelined round trip per chunk); still in publish order per publisher,
    each once, every one with an offset a reconnect can replay from."""
    c = await connect(server.url, "/feed", server.token("u"))
    await c.call("room:join", {"room": "zone:rec"})
    await asyncio.gather(*(publish_many(server, 100 * k, 50) for k in range(4)))
    got = await c.wait_for("content.created", 200, timeout=30)
    ns = [int(e["payload"]["title"]) for e in got]
    assert sorted(ns) == sorted(100 * k + i for k in range(4) for i in range(50))
    for k in range(4):  # each publisher's own events in its order
        assert [n for n in ns if n // 100 == k] == list(range(100 * k, 100 * k + 50))
    offsets = [m["offsets"]["zone:rec"] for m in c.meta["content.created"]]
    assert len(set(offsets)) == 200
    first = offsets[0]
    await c.close()

    back = await connect(
        server.url, "/feed", server.token("u"), auth={"recover": {"zone:rec": first}}
    )
    (result,) = await back.wait_for("session:recovered")
    assert result["rooms"]["zone:rec"]["replayed"] == 199
    replayed = await back.wait_for("content.created", 199)
    assert [int(e["payload"]["title"]) for e in replayed] == ns[1:]
    await back.close()


async def test_reconnect_recovers_100_missed_events_in_order(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("u"))
    await c.call("room:join", {"room": "zone:rec"})
    await publish_many(server, 0, 2)
    await c.wait_for("content.created", 2)
    offset = await last_offset(c, "zone:rec")
    await c.close()

    await publish_many(server, 2, 100)
    await settled(server)  # all 100 fanned out (and logged) while the client was away
    back = await connect(
        server.url, "/feed", server.token("u"), auth={"recover": {"zone:rec": offset}}
    )
    (result,) = await back.wait_for("session:recovered")
    await back.wait_for("content.created", 100)
    assert result["recovered"] is True
    assert result["rooms"]["zone:rec"]["recovered"] is True
    assert result["rooms"]["zone:rec"]["replayed"] == 100
    assert titles(back) == list(range(2, 102))
    # it is in the room again: live events keep coming, after the replay
    await publish_many(server, 102, 1)
    await back.wait_for("content.created", 101)
    assert titles(back) == list(range(2, 103))
    await back.close()


async def test_live_events_during_recovery_are_neither_lost_nor_doubled(
    server: ServerHandle,
) -> None:
    c = await connect(server.url, "/feed", server.token("u"))
    await c.call("room:join", {"room": "zone:rec"})
    await publish_many(server, 0, 1)
    await c.wait_for("content.created")
    offset = await last_offset(c, "zone:rec")
    await c.close()
    await publish_many(server, 1, 50)

    async def keep_publishing() -> None:
        await publish_many(server, 51, 50)

    publisher = asyncio.create_task(keep_publishing())
    back = await connect(
        server.url, "/feed", server.token("u"), auth={"recover": {"zone:rec": offset}}
    )
    await publisher
    await back.wait_for("content.created", 100, timeout=10)
    await asyncio.sleep(0.3)
    assert titles(back) == list(range(1, 101))
    await back.close()


async def test_room_join_with_since_recovers(server: ServerHandle) -> None:
    c = await connect(server.url, "/live", server.token("u"))
    join = await c.call("room:join", {"room": "live:9"})
    start = join["data"]["offset"]
    await c.call("room:leave", {"room": "live:9"})
    for n in range(5):
        await server.publish(
            {
                "type": "live.viewer_joined",
                "subjects": ["live:9"],
                "payload": {"live_id": "9", "user_id": f"v{n}"},
            }
        )
    await asyncio.sleep(0.3)
    ack = await c.call("room:join", {"room": "live:9", "since": start})
    assert ack["ok"] and ack["data"]["recovered"] is True and ack["data"]["replayed"] == 5
    got = await c.wait_for("live.viewer_joined", 5)
    assert [e["payload"]["user_id"] for e in got] == [f"v{n}" for n in range(5)]
    bad = await c.call("room:join", {"room": "live:9", "since": "nonsense"})
    assert bad["ok"] and bad["data"]["recovered"] is False
    await c.close()


async def test_unrecoverable_says_so(tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> None:
    settings = make_settings(
        tmp_path, database_url=await pg_clusters["embedded"].fresh(), recovery_window_s=1
    )
    srv = await start_server(settings, free_port())
    try:
        c = await connect(srv.url, "/feed", srv.token("u"))
        await c.call("room:join", {"room": "zone:rec"})
        await publish_many(srv, 0, 1)
        await c.wait_for("content.created")
        offset = await last_offset(c, "zone:rec")
        await c.close()
        await publish_many(srv, 1, 3)
        await asyncio.sleep(1.5)  # past the (1 s) window
        await publish_many(srv, 4, 1)  # the append trims the old entries
        late = await connect(
            srv.url,
            "/feed",
            srv.token("u"),
            auth={"recover": {"zone:rec": offset, "conversation:x": offset, "user:u": "a:1"}},
        )
        (result,) = await late.wait_for("session:recovered")
        assert result["recovered"] is False
        assert result["rooms"]["zone:rec"]["recovered"] is False
        assert result["rooms"]["conversation:x"]["reason"] == "forbidden"
        assert result["rooms"]["user:u"]["recovered"] is False  # unknown epoch
        assert titles(late) == []  # nothing half-replayed; the client resyncs
        await late.close()
    finally:
        await srv.stop()
    # a restarted embedded server has a new epoch: the old offset is refused
    srv = await start_server(settings, free_port())
    try:
        again = await connect(
            srv.url, "/feed", srv.token("u"), auth={"recover": {"zone:rec": offset}}
        )
        (result,) = await again.wait_for("session:recovered")
        assert result["rooms"]["zone:rec"]["reason"] == "epoch changed"
        await again.close()
    finally:
        await srv.stop()


async def test_recover_on_another_process(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, redis_url=REDIS_URL, database_url=await pg_clusters["machine"].fresh()
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        c = await connect(a.url, "/feed", a.token("u"))
        await c.call("room:join", {"room": "zone:rec"})
        await publish_many(a, 0, 1)
        await c.wait_for("content.created")
        offset = await last_offset(c, "zone:rec")
        await c.close()  # drops from A
        await publish_many(a, 1, 50)
        await publish_many(b, 51, 50)
        back = await connect(  # comes back on B
            b.url, "/feed", b.token("u"), auth={"recover": {"zone:rec": offset}}
        )
        (result,) = await back.wait_for("session:recovered", timeout=10)
        assert result["recovered"] is True
        try:  # CI once had 99/100 after 10 s (not reproduced in 50 runs here): say which
            await back.wait_for("content.created", 100, timeout=30)
        except TimeoutError:
            missing = sorted(set(range(1, 101)) - set(titles(back)))
            raise AssertionError(f"missing {missing}; recovery said {result}") from None
        assert titles(back) == list(range(1, 101))
        await asyncio.sleep(0.3)
        assert len(titles(back)) == 100
        await back.close()
    finally:
        await a.stop()
        await b.stop()


async def test_conversation_rooms_recover_for_members_only(server: ServerHandle) -> None:
    a = await connect(server.url, "/messages", server.token("a"))
    b = await connect(server.url, "/messages", server.token("b"))
    cid = (await a.call("conversation:open", {"user_id": "b"}))["data"]["id"]
    await a.call("message:send", {"conversation_id": cid, "client_msg_id": "0", "body": "m0"})
    await b.wait_for("message:new")
    offset = b.meta["message:new"][-1]["offsets"][f"conversation:{cid}"]
    await b.close()
    for i in range(1, 6):
        await a.call(
            "message:send", {"conversation_id": cid, "client_msg_id": str(i), "body": f"m{i}"}
        )
    back = await connect(
        server.url,
        "/messages",
        server.token("b"),
        auth={"recover": {f"conversation:{cid}": offset}},
    )
    (result,) = await back.wait_for("session:recovered")
    assert result["recovered"] is True
    got = await back.wait_for("message:new", 5)
    assert [m["body"] for m in got] == [f"m{i}" for i in range(1, 6)]
    intruder = await connect(
        server.url,
        "/messages",
        server.token("eve"),
        auth={"recover": {f"conversation:{cid}": offset}},
    )
    (denied,) = await intruder.wait_for("session:recovered")
    assert denied["rooms"][f"conversation:{cid}"]["reason"] == "forbidden"
    await asyncio.sleep(0.2)
    assert "message:new" not in intruder.received
    for c in (a, back, intruder):
        await c.close()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_js_client_recovers(server: ServerHandle) -> None:
    async with jsclient.JsClients() as js:
        c, _ = await js.connect(server.url, "/feed", {"token": server.token("u")})
        await js.emit(c, "room:join", {"room": "zone:rec"})
        await publish_many(server, 0, 1)
        await js.wait(c, "content.created")
        res = await js._call(cmd="received", id=c, event="content.created")
        offset = res["metas"][-1]["offsets"]["zone:rec"]
        await js.close(c)
        await publish_many(server, 1, 20)
        back, _ = await js.connect(
            server.url,
            "/feed",
            {"token": server.token("u"), "recover": {"zone:rec": offset}},
        )
        (result,) = await js.wait(back, "session:recovered")
        events = await js.wait(back, "content.created", 20)
        assert result["recovered"] is True
        assert [int(e["payload"]["title"]) for e in events] == list(range(1, 21))
