"""Live chat on /live: send and receive, idempotent retries, history, slow mode, moderation
(delete, timeout, ban) enforced on every process, reaction bursts, retention, and one check
with the official JS client."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from livechat.feature import LiveChatFeature
from livechat.service import LiveChat
from server.errors import ApiError, Code
from server.events import Event
from server.managers_redis import RedisManager, _room_message
from server.roomlog_redis import RedisRoomLog
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings, redis_settings
from tests.helpers import Client, ServerHandle, connect, spawn_server

NS = "/live"


# -- helpers ----------------------------------------------------------------------------------


async def wait_live(dsn: str, live_id: str, state: str = "live") -> None:
    """Until the `lives` consumer recorded the live (bus consumers run asynchronously)."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            if await conn.fetchval("SELECT state FROM lives WHERE id = $1", live_id) == state:
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise TimeoutError(f"live {live_id} never became {state}")


async def start_live(server: ServerHandle, live_id: str, host: str) -> None:
    status, _ = await server.publish(
        {
            "type": "live.started",
            "subjects": [f"live:{live_id}"],
            "payload": {"live_id": live_id, "host_id": host},
        }
    )
    assert status == 202
    assert server.settings.database_url
    await wait_live(server.settings.database_url, live_id)


async def viewer(server: ServerHandle, user: str, live_id: str, role: str = "user") -> Client:
    c = await connect(server.url, NS, server.token(user, role))
    ack = await c.call("room:join", {"room": f"live:{live_id}"})
    assert ack["ok"], ack
    return c


def say(live_id: str, body: str, cid: str | None = None) -> dict[str, Any]:
    return {"live_id": live_id, "client_msg_id": cid or uuid.uuid4().hex, "body": body}


def chat(server: ServerHandle) -> LiveChat:
    feature = server.features.livechat
    assert isinstance(feature, LiveChatFeature)
    return feature.service


async def audit_actions(dsn: str) -> list[tuple[str, str, str | None]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT actor_id, action, target FROM audit_log WHERE action LIKE 'chat.%' ORDER BY id"
        )
    finally:
        await conn.close()
    return [(r["actor_id"], r["action"], r["target"]) for r in rows]


async def quiet(client: Client, event: str, count: int) -> None:
    """Give a stray event time to arrive, then check none did."""
    await asyncio.sleep(0.3)
    assert len(client.received[event]) == count, client.received[event]


# -- messages ---------------------------------------------------------------------------------


async def test_send_reaches_the_room_once_and_a_retry_sends_nothing_new(
    server: ServerHandle,
) -> None:
    await start_live(server, "l1", "host")
    watcher = await viewer(server, "w", "l1")
    sender = await viewer(server, "s", "l1")
    outsider = await connect(server.url, NS, server.token("o"))  # connected, not in the room

    ack = await sender.call("chat:send", say("l1", "  hello, room  ", "c-1"))
    assert ack["ok"], ack
    msg_id, ts = ack["data"]["id"], ack["data"]["ts"]
    assert set(ack["data"]) == {"id", "ts"}
    for c in (watcher, sender):  # the sender's socket gets it too, in room order
        (msg,) = await c.wait_for("chat:new")
        assert msg == {
            "id": msg_id,
            "live_id": "l1",
            "user_id": "s",
            "client_msg_id": "c-1",
            "body": "hello, room",
            "ts": ts,
        }
        assert "live:l1" in c.meta["chat:new"][0]["offsets"]  # recoverable room event

    again = await sender.call("chat:send", say("l1", "hello, room", "c-1"))
    assert again["data"] == {"id": msg_id, "ts": ts, "duplicate": True}
    await quiet(watcher, "chat:new", 1)
    assert outsider.received["chat:new"] == []
    for c in (watcher, sender, outsider):
        await c.close()


async def test_send_is_validated_and_needs_the_room_and_a_live_that_is_on(
    server: ServerHandle,
) -> None:
    await start_live(server, "l2", "host")
    c = await viewer(server, "u", "l2")
    cases = [
        ({**say("l2", "x" * 501)}, "bad_request"),  # over the 500-character cap
        ({**say("l2", "   ")}, "bad_request"),
        ({**say("l2", "bell \x07")}, "bad_request"),
        ({**say("l2", "hi"), "user_id": "someone-else"}, "bad_request"),  # extra field
        ({"live_id": "l2", "body": "no client id"}, "bad_request"),
        ({**say("l:2", "hi")}, "bad_request"),
        ({**say("other", "hi")}, "forbidden"),  # not joined to live:other
    ]
    for payload, code in cases:
        ack = await c.call("chat:send", payload)
        assert ack["ok"] is False and ack["error"]["code"] == code, (payload, ack)
    assert (await c.call("chat:send", say("l2", "x" * 500)))["ok"]  # at the cap: fine

    await c.call("room:join", {"room": "live:never"})
    ack = await c.call("chat:send", say("never", "hi"))
    assert ack["error"]["code"] == "not_found"

    status, _ = await server.publish(
        {"type": "live.ended", "subjects": ["live:l2"], "payload": {"live_id": "l2"}}
    )
    assert status == 202
    assert server.settings.database_url
    await wait_live(server.settings.database_url, "l2", "ended")
    ack = await c.call("chat:send", say("l2", "too late"))
    assert ack["error"]["code"] == "conflict"
    await c.close()


async def test_history_gives_the_last_50_newest_last(server: ServerHandle) -> None:
    await start_live(server, "l3", "host")
    c = await viewer(server, "u", "l3")
    ids = []
    for n in range(55):
        ack = await c.call("chat:send", say("l3", f"m{n}"))
        ids.append(ack["data"]["id"])
    late = await viewer(server, "late", "l3")  # joins after the fact: asks for history
    ack = await late.call("chat:history", {"live_id": "l3"})
    assert ack["ok"], ack
    page = ack["data"]
    assert page["state"] == "live" and page["slow_mode_s"] == 0
    assert [m["body"] for m in page["messages"]] == [f"m{n}" for n in range(5, 55)]
    assert [m["id"] for m in page["messages"]] == ids[5:]
    older = await late.call("chat:history", {"live_id": "l3", "before": ids[5], "limit": 10})
    assert [m["body"] for m in older["data"]["messages"]] == [f"m{n}" for n in range(5)]
    ack = await late.call("chat:history", {"live_id": "l3", "limit": 51})
    assert ack["error"]["code"] == "bad_request"
    outsider = await connect(server.url, NS, server.token("o"))
    ack = await outsider.call("chat:history", {"live_id": "l3"})
    assert ack["error"]["code"] == "forbidden"
    for x in (c, late, outsider):
        await x.close()


# -- slow mode and moderation -----------------------------------------------------------------


async def test_slow_mode_lets_one_message_through_per_interval(server: ServerHandle) -> None:
    await start_live(server, "l4", "host")
    host = await viewer(server, "host", "l4")
    u = await viewer(server, "u", "l4")
    v = await viewer(server, "v", "l4")

    ack = await u.call("chat:slowmode", {"live_id": "l4", "seconds": 30})
    assert ack["error"]["code"] == "forbidden"  # a viewer is not a moderator
    ack = await host.call("chat:slowmode", {"live_id": "l4", "seconds": 30})
    assert ack["ok"] and ack["data"] == {"live_id": "l4", "seconds": 30}
    (note,) = await v.wait_for("chat:slowmode")
    assert note == {"live_id": "l4", "seconds": 30}

    first = await u.call("chat:send", say("l4", "one", "a"))
    assert first["ok"], first
    ack = await u.call("chat:send", say("l4", "two", "b"))
    assert ack["ok"] is False and ack["error"]["code"] == "rate_limited"
    assert 0 < ack["error"]["retry_after"] <= 30
    # a retry of the message that went out is answered, not refused
    retry = await u.call("chat:send", say("l4", "one", "a"))
    assert retry["data"] == {**first["data"], "duplicate": True}
    assert (await v.call("chat:send", say("l4", "mine")))["ok"]  # per user, not per room

    mod = await connect(server.url, NS, server.token("mod", "moderator"))
    assert (await mod.call("chat:slowmode", {"live_id": "l4", "seconds": 0}))["ok"]
    assert (await u.call("chat:send", say("l4", "two", "b")))["ok"]
    assert (await v.call("chat:history", {"live_id": "l4"}))["data"]["slow_mode_s"] == 0
    assert server.settings.database_url
    assert await audit_actions(server.settings.database_url) == [
        ("host", "chat.slowmode", "live:l4"),
        ("mod", "chat.slowmode", "live:l4"),
    ]
    for c in (host, u, v, mod):
        await c.close()


async def test_delete_leaves_a_tombstone_and_tells_the_room(server: ServerHandle) -> None:
    await start_live(server, "l5", "host")
    u = await viewer(server, "u", "l5")
    w = await viewer(server, "w", "l5")
    kept = (await u.call("chat:send", say("l5", "fine")))["data"]["id"]
    bad = (await u.call("chat:send", say("l5", "spam", "spam-1")))["data"]["id"]

    ack = await w.call("chat:delete", {"live_id": "l5", "message_id": bad})
    assert ack["error"]["code"] == "forbidden"
    mod = await connect(server.url, NS, server.token("mod", "moderator"))
    ack = await mod.call("chat:delete", {"live_id": "l5", "message_id": bad, "reason": "spam"})
    assert ack["ok"] and ack["data"]["deleted"] is True
    (gone,) = await w.wait_for("chat:deleted")
    assert gone == {"live_id": "l5", "message_id": bad}
    history = (await w.call("chat:history", {"live_id": "l5"}))["data"]["messages"]
    assert [m["id"] for m in history] == [kept]
    # the tombstone still answers the author's retry; nothing is re-sent
    retry = await u.call("chat:send", say("l5", "spam", "spam-1"))
    assert retry["data"]["id"] == bad and retry["data"]["duplicate"] is True
    ack = await mod.call("chat:delete", {"live_id": "l5", "message_id": str(uuid.uuid4())})
    assert ack["error"]["code"] == "not_found"
    assert (await mod.call("chat:delete", {"live_id": "l5", "message_id": bad}))["ok"]
    await quiet(w, "chat:deleted", 1)  # deleting twice broadcasts once
    assert server.settings.database_url
    assert await audit_actions(server.settings.database_url) == [("mod", "chat.delete", "user:u")]
    for c in (u, w, mod):
        await c.close()


async def test_timeout_mutes_a_user_until_it_ends_or_is_lifted(server: ServerHandle) -> None:
    await start_live(server, "l6", "host")
    host = await viewer(server, "host", "l6")
    u = await viewer(server, "u", "l6")
    w = await viewer(server, "w", "l6")

    ack = await w.call("chat:timeout", {"live_id": "l6", "user_id": "u", "seconds": 60})
    assert ack["error"]["code"] == "forbidden"
    ack = await host.call("chat:timeout", {"live_id": "l6", "user_id": "u", "seconds": 60})
    assert ack["ok"], ack
    (told,) = await u.wait_for("chat:restricted")
    assert told["kind"] == "timeout" and told["until"] == ack["data"]["until"]
    ack = await u.call("chat:send", say("l6", "let me speak"))
    assert ack["error"]["code"] == "forbidden"
    assert 50 < ack["error"]["retry_after"] <= 60
    assert (await w.call("chat:send", say("l6", "others still can")))["ok"]
    assert (await u.call("reaction:send", {"live_id": "l6", "kind": "clap"}))["ok"]  # watching

    ack = await host.call("chat:timeout", {"live_id": "l6", "user_id": "host", "seconds": 5})
    assert ack["error"]["code"] == "bad_request"  # not yourself
    mod = await connect(server.url, NS, server.token("mod", "moderator"))
    ack = await mod.call("chat:timeout", {"live_id": "l6", "user_id": "host", "seconds": 5})
    assert ack["error"]["code"] == "forbidden"  # not the host

    ack = await host.call("chat:unban", {"live_id": "l6", "user_id": "u"})
    assert ack["data"]["lifted"] == "timeout"
    assert (await u.call("chat:send", say("l6", "thanks")))["ok"]
    for c in (host, u, w, mod):
        await c.close()


async def test_ban_takes_the_user_out_and_keeps_them_out(server: ServerHandle) -> None:
    await start_live(server, "l7", "host")
    u = await viewer(server, "u", "l7")
    u2 = await viewer(server, "u", "l7")  # a second device
    w = await viewer(server, "w", "l7")
    offset = (await w.call("room:join", {"room": "live:l7"}))["data"]["offset"]
    mod = await connect(server.url, NS, server.token("mod", "moderator"))

    ack = await mod.call("chat:ban", {"live_id": "l7", "user_id": "u", "reason": "abuse"})
    assert ack["ok"] and ack["data"] == {"live_id": "l7", "user_id": "u", "banned": True}
    for c in (u, u2):
        (told,) = await c.wait_for("chat:restricted")
        assert told == {"live_id": "l7", "kind": "ban"}
    # out of the room on both devices: no sends, and no more room events
    ack = await u.call("chat:send", say("l7", "still here?"))
    assert ack["error"]["code"] == "forbidden"
    assert (await w.call("chat:send", say("l7", "bye")))["ok"]
    await w.wait_for("chat:new")
    await quiet(u2, "chat:new", 0)
    # and kept out: room:join, room:join with since, connection state recovery
    ack = await u.call("room:join", {"room": "live:l7"})
    assert ack["error"]["code"] == "forbidden" and ack["error"]["details"]["reason"] == "banned"
    ack = await u.call("room:join", {"room": "live:l7", "since": offset})
    assert ack["error"]["code"] == "forbidden"
    back = await connect(server.url, NS, server.token("u"), auth={"recover": {"live:l7": offset}})
    (result,) = await back.wait_for("session:recovered")
    assert result["rooms"]["live:l7"] == {"recovered": False, "reason": "forbidden"}
    assert (await u.call("room:join", {"room": "live:other"}))["ok"]  # other lives are open
    assert (await mod.call("chat:timeout", {"live_id": "l7", "user_id": "u", "seconds": 9}))[
        "error"
    ]["code"] == "conflict"

    ack = await mod.call("chat:unban", {"live_id": "l7", "user_id": "u"})
    assert ack["data"]["lifted"] == "ban"
    assert (await u.call("room:join", {"room": "live:l7"}))["ok"]
    assert (await u.call("chat:send", say("l7", "I'll behave")))["ok"]
    assert server.settings.database_url
    assert await audit_actions(server.settings.database_url) == [
        ("mod", "chat.ban", "user:u"),
        ("mod", "chat.unban", "user:u"),
    ]
    for c in (u, u2, w, mod, back):
        await c.close()


# -- sends in runs ----------------------------------------------------------------------------


def record_runs(svc: LiveChat) -> list[int]:
    """The size of every INSERT the service makes (one per run of sends)."""
    sizes: list[int] = []
    insert = svc.store.insert_messages

    async def spy(live_id: str, sends: list[tuple[str, str, str]]) -> list[Any]:
        sizes.append(len(sends))
        return await insert(live_id, sends)

    svc.store.insert_messages = spy  # type: ignore[method-assign]
    return sizes


async def test_sends_that_arrive_together_go_out_as_one_run_in_order(
    server: ServerHandle,
) -> None:
    """30 sends queued in one tick share one run: the refused one (a timed-out user) is refused
    alone, a retry inside the run is a duplicate, the rest reach every viewer once, in the
    order they were sent (which is the chat's seq order), each with its own offset that a
    replay can resume from."""
    await start_live(server, "r1", "host")
    host = await viewer(server, "host", "r1")
    watcher = await viewer(server, "w", "r1")
    late = await viewer(server, "late", "r1")
    start = (await late.call("room:join", {"room": "live:r1"}))["data"]["offset"]
    await late.call("room:leave", {"room": "live:r1"})
    ack = await host.call("chat:timeout", {"live_id": "r1", "user_id": "muted", "seconds": 600})
    assert ack["ok"], ack
    svc = chat(server)
    runs = record_runs(svc)

    sends = [(f"u{i % 5}", f"c-{i}", f"msg {i}") for i in range(30)]
    sends[12] = ("muted", "c-12", "let me talk")
    sends[20] = ("u1", "c-6", "msg 6")  # a retry of send 6 (u1, c-6) in the same run
    outcomes: list[Any] = await asyncio.gather(
        *(svc.send(u, "r1", c, b) for u, c, b in sends), return_exceptions=True
    )
    assert runs == [29]  # one run; the refused send never reached the INSERT
    refused = outcomes[12]
    assert isinstance(refused, ApiError) and refused.code is Code.FORBIDDEN
    assert refused.details["reason"] == "timeout"
    assert isinstance(outcomes[20], dict) and outcomes[20]["duplicate"] is True
    assert isinstance(outcomes[6], dict) and outcomes[20]["id"] == outcomes[6]["id"]
    new = [i for i in range(30) if i not in (12, 20)]
    for i in new:
        assert isinstance(outcomes[i], dict) and "duplicate" not in outcomes[i], outcomes[i]

    for c in (host, watcher):
        got = await c.wait_for("chat:new", len(new))
        assert [m["body"] for m in got] == [sends[i][2] for i in new]
        assert [m["id"] for m in got] == [outcomes[i]["id"] for i in new]
    await quiet(watcher, "chat:new", len(new))
    offsets = [m["offsets"]["live:r1"] for m in watcher.meta["chat:new"]]
    assert len(set(offsets)) == len(new)
    history = (await watcher.call("chat:history", {"live_id": "r1"}))["data"]["messages"]
    assert [m["body"] for m in history] == [sends[i][2] for i in new]  # seq order = room order

    # replay from before the run and from the middle of it
    ack = await late.call("room:join", {"room": "live:r1", "since": start})
    assert ack["data"]["recovered"] is True and ack["data"]["replayed"] == len(new)
    ids = [m["id"] for m in watcher.received["chat:new"]]
    assert [m["id"] for m in await late.wait_for("chat:new", len(new))] == ids
    await late.call("room:leave", {"room": "live:r1"})
    ack = await late.call("room:join", {"room": "live:r1", "since": offsets[9]})
    assert ack["data"]["recovered"] is True and ack["data"]["replayed"] == len(new) - 10
    again = await late.wait_for("chat:new", 2 * len(new) - 10)
    assert [m["id"] for m in again[len(new) :]] == ids[10:]
    for c in (host, watcher, late):
        await c.close()


async def test_slow_mode_inside_a_run_refuses_only_the_second_send(server: ServerHandle) -> None:
    await start_live(server, "r2", "host")
    host = await viewer(server, "host", "r2")
    watcher = await viewer(server, "w", "r2")
    assert (await host.call("chat:slowmode", {"live_id": "r2", "seconds": 60}))["ok"]
    svc = chat(server)
    runs = record_runs(svc)
    outcomes: list[Any] = await asyncio.gather(
        svc.send("a", "r2", "a-1", "one"),
        svc.send("a", "r2", "a-2", "two"),
        svc.send("b", "r2", "b-1", "three"),
        return_exceptions=True,
    )
    first, second, other = outcomes
    assert runs == [2]
    assert isinstance(second, ApiError) and second.code is Code.RATE_LIMITED
    assert second.details["reason"] == "slow_mode" and second.details["retry_after"] > 0
    assert isinstance(first, dict) and isinstance(other, dict)
    got = await watcher.wait_for("chat:new", 2)
    assert [m["body"] for m in got] == ["one", "three"]
    await quiet(watcher, "chat:new", 2)
    # the retry of a send that went out is still its duplicate, not a slow-mode refusal
    assert (await svc.send("a", "r2", "a-1", "one"))["id"] == first["id"]
    for c in (host, watcher):
        await c.close()


async def test_a_run_that_is_not_stored_fails_whole_and_gives_slow_mode_back(
    server: ServerHandle,
) -> None:
    await start_live(server, "r3", "host")
    host = await viewer(server, "host", "r3")
    watcher = await viewer(server, "w", "r3")
    assert (await host.call("chat:slowmode", {"live_id": "r3", "seconds": 60}))["ok"]
    svc = chat(server)
    insert = svc.store.insert_messages

    async def broken(live_id: str, sends: list[tuple[str, str, str]]) -> list[Any]:
        raise ConnectionError("database went away")

    svc.store.insert_messages = broken  # type: ignore[method-assign]
    failed: list[Any] = await asyncio.gather(
        svc.send("a", "r3", "a-1", "one"), svc.send("b", "r3", "b-1", "two"),
        return_exceptions=True,
    )  # fmt: skip
    assert all(isinstance(o, ConnectionError) for o in failed), failed
    svc.store.insert_messages = insert  # type: ignore[method-assign]
    # nothing went out, and the failed sends did not use up the slow-mode slot
    await quiet(watcher, "chat:new", 0)
    sent = await asyncio.gather(
        svc.send("a", "r3", "a-1", "one"), svc.send("b", "r3", "b-1", "two")
    )
    got = await watcher.wait_for("chat:new", 2)
    assert [m["id"] for m in got] == [s["id"] for s in sent]
    for c in (host, watcher):
        await c.close()


async def test_a_run_after_a_missed_entry_catches_up_first(server: ServerHandle) -> None:
    """On Redis, a node that did not hear an entry of the room (its publish went by unheard)
    reads it from the room log before delivering the run that follows it: in order, once."""
    manager = server.node.fanout.manager
    if not isinstance(manager, RedisManager):
        pytest.skip("the channel and its gaps are Redis's")
    await start_live(server, "r4", "host")
    watcher = await viewer(server, "w", "r4")
    svc = chat(server)
    await svc.send("a", "r4", "a-0", "heard")
    await watcher.wait_for("chat:new")
    unheard = RedisRoomLog(manager.log_redis, manager.roomlog.prefix, "nobody-listens-here")
    data = {**watcher.received["chat:new"][0], "id": str(uuid.uuid4()), "body": "unheard"}
    await unheard.append_publish(["live:r4"], _room_message(NS, ["live:r4"], "chat:new", data, []))
    await asyncio.gather(*(svc.send("b", "r4", f"b-{i}", f"run {i}") for i in range(5)))
    got = await watcher.wait_for("chat:new", 7)
    assert [m["body"] for m in got] == ["heard", "unheard", *(f"run {i}" for i in range(5))]
    await quiet(watcher, "chat:new", 7)
    offsets = [m["offsets"]["live:r4"] for m in watcher.meta["chat:new"]]
    assert len(set(offsets)) == 7
    await watcher.close()


# -- reactions --------------------------------------------------------------------------------


def burst_totals(bursts: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for b in bursts:
        for kind, n in b["counts"].items():
            totals[kind] = totals.get(kind, 0) + n
    return totals


async def wait_total(c: Client, total: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        bursts = c.received["reaction:burst"]
        if sum(burst_totals(bursts).values()) >= total:
            return bursts
        if time.monotonic() > deadline:
            raise TimeoutError(f"reaction totals {burst_totals(bursts)} of {total}")
        await c.wait_for("reaction:burst", len(bursts) + 1, timeout=deadline - time.monotonic())


async def test_reactions_arrive_aggregated(server: ServerHandle) -> None:
    watcher = await viewer(server, "w", "l8")
    fans = [await viewer(server, f"fan{i}", "l8") for i in range(4)]
    assert (await fans[0].call("reaction:send", {"live_id": "l8", "kind": "boo"}))["error"][
        "code"
    ] == "bad_request"
    outsider = await connect(server.url, NS, server.token("o"))
    assert (await outsider.call("reaction:send", {"live_id": "l8", "kind": "wow"}))["error"][
        "code"
    ] == "forbidden"

    started = time.monotonic()
    for i in range(1000):  # fire and forget, as a tapping client does
        kind = "heart" if i % 5 else "fire"
        await fans[i % 4].sio.emit("reaction:send", {"live_id": "l8", "kind": kind}, namespace=NS)
    bursts = await wait_total(watcher, 1000)
    elapsed = time.monotonic() - started
    assert burst_totals(bursts) == {"heart": 800, "fire": 200}
    assert all(b["live_id"] == "l8" for b in bursts)
    # a handful of frames, at most 4 a second
    assert len(bursts) < 100
    assert len(bursts) <= elapsed * 4 + 2
    assert watcher.meta["reaction:burst"][0] is None  # volatile: no offset, not replayed
    await quiet(watcher, "reaction:burst", len(bursts))
    for c in (watcher, *fans, outsider):
        await c.close()


# -- lives, retention -------------------------------------------------------------------------


def live_event(type_: str, live_id: str, ts: datetime, host: str | None = "h") -> Event:
    payload: dict[str, Any] = {"live_id": live_id}
    if host:
        payload["host_id"] = host
    return Event(
        id=uuid.uuid4().hex,
        type=type_,
        actor=None,
        subjects=[f"live:{live_id}"],
        payload=payload,
        ts=ts.isoformat(),
    )


async def test_lives_follow_the_newest_event_and_the_trim_keeps_the_latest(
    server: ServerHandle,
) -> None:
    svc = chat(server)
    now = datetime.now(UTC)
    await svc.on_event(live_event("live.started", "l9", now))
    await svc.on_event(live_event("live.ended", "l9", now - timedelta(seconds=5), None))  # late
    live = await svc.store.live("l9")
    assert live is not None and live["state"] == "live" and live["host_id"] == "h"
    await svc.on_event(live_event("live.ended", "l9", now + timedelta(seconds=5), None))
    live = await svc.store.live("l9")
    assert live is not None and live["state"] == "ended" and live["host_id"] == "h"
    await svc.on_event(live_event("live.started", "l9", now + timedelta(seconds=9), "h2"))
    assert (await svc._admit("l9", "u", take_slot=False)).outcome == "ok"  # cache refreshed

    for n in range(8):
        await svc.store.insert_message("l9", "u", f"c{n}", f"m{n}")
    await svc.store.insert_message("other", "u", "old", "old")
    await svc.store.storage.db.execute(
        "UPDATE live_chat_messages SET created_at = now() - interval '2 days'"
        " WHERE live_id = 'other'"
    )
    assert await svc.trim(keep=3, max_age_s=3600) == 6
    rest = await svc.store.recent("l9", 50)
    assert [r["body"] for r in rest] == ["m5", "m6", "m7"]
    assert await svc.store.recent("other", 50) == []
    # the trim runs as a scheduled job, every 10 minutes
    jobs = await svc.store.storage.db.fetch("SELECT state FROM jobs WHERE kind = 'livechat.trim'")
    assert [j["state"] for j in jobs] == ["pending"]


# -- across processes -------------------------------------------------------------------------


@pytest.mark.backends("redis")
async def test_slow_mode_timeout_ban_and_reactions_hold_across_processes(
    backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, **redis_settings(backend), database_url=await pg_clusters["machine"].fresh()
    )
    a, b = await asyncio.gather(
        spawn_server(settings, free_port()), spawn_server(settings, free_port())
    )
    clients: list[Client] = []

    async def on(server: ServerHandle, user: str, role: str = "user") -> Client:
        c = await viewer(server, user, "x1", role)
        clients.append(c)
        return c

    try:
        await start_live(a, "x1", "host")
        host_b = await on(b, "host")
        u_a, u_b = await on(a, "u"), await on(b, "u")
        watch_a, watch_b = await on(a, "w"), await on(b, "w2")

        # slow mode set on B holds for the same user's sockets on A and B
        assert (await host_b.call("chat:slowmode", {"live_id": "x1", "seconds": 60}))["ok"]
        assert (await u_a.call("chat:send", say("x1", "from A")))["ok"]
        ack = await u_b.call("chat:send", say("x1", "from B"))
        assert ack["error"]["code"] == "rate_limited" and ack["error"]["retry_after"] > 0
        await watch_b.wait_for("chat:new")
        assert (await host_b.call("chat:slowmode", {"live_id": "x1", "seconds": 0}))["ok"]

        # a timeout given on B mutes the user on A at once
        ack = await host_b.call("chat:timeout", {"live_id": "x1", "user_id": "u", "seconds": 600})
        assert ack["ok"], ack
        assert (await u_a.call("chat:send", say("x1", "muted?")))["error"]["code"] == "forbidden"
        assert (await host_b.call("chat:unban", {"live_id": "x1", "user_id": "u"}))["ok"]
        assert (await u_a.call("chat:send", say("x1", "back")))["ok"]

        # a ban given on A takes the user out of the room on B and refuses B's room:join
        mod_a = await connect(a.url, NS, a.token("mod", "moderator"))
        clients.append(mod_a)
        assert (await mod_a.call("chat:ban", {"live_id": "x1", "user_id": "u"}))["ok"]
        await u_b.wait_for("chat:restricted")
        assert (await u_b.call("chat:send", say("x1", "hello?")))["error"]["code"] == "forbidden"
        ack = await u_b.call("room:join", {"room": "live:x1"})
        assert ack["error"]["details"]["reason"] == "banned"
        sent = (await watch_a.call("chat:send", say("x1", "after the ban")))["data"]["id"]
        for c in (watch_a, watch_b):
            await c.wait_for("chat:new", 3)
            assert c.received["chat:new"][-1]["id"] == sent
        await quiet(u_b, "chat:new", 2)  # saw "from A" and "back", nothing after the ban
        await quiet(u_a, "chat:new", 2)

        # reactions sent through both processes: one flusher, counts summed once
        started = time.monotonic()
        for i in range(300):
            c = watch_a if i % 2 else watch_b
            await c.sio.emit("reaction:send", {"live_id": "x1", "kind": "wow"}, namespace=NS)
        for c in (watch_a, watch_b, host_b):
            bursts = await wait_total(c, 300)
            assert burst_totals(bursts) == {"wow": 300}
            assert len(bursts) <= (time.monotonic() - started) * 4 + 2
    finally:
        for c in clients:
            await c.close()
        await a.stop()
        await b.stop()


# -- the official JS client -------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
async def test_js_client_chats_and_sees_bursts(server: ServerHandle) -> None:
    await start_live(server, "js1", "host")
    py = await viewer(server, "py", "js1")
    async with jsclient.JsClients() as js:
        cid, res = await js.connect(server.url, NS, {"token": server.token("js")})
        assert res["ok"], res
        assert (await js.emit(cid, "room:join", {"room": "live:js1"}))["ok"]
        ack = await js.emit(cid, "chat:send", say("js1", "héllo from JS ✓", "js-1"))
        assert ack["ok"] is True and set(ack["data"]) == {"id", "ts"}
        (msg,) = await js.wait(cid, "chat:new")
        assert msg["body"] == "héllo from JS ✓" and msg["id"] == ack["data"]["id"]
        (seen,) = await py.wait_for("chat:new")
        assert seen == msg
        history = await js.emit(cid, "chat:history", {"live_id": "js1"})
        assert [m["id"] for m in history["data"]["messages"]] == [msg["id"]]
        ack = await js.emit(cid, "chat:send", say("js1", "y" * 501))
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        for _ in range(20):
            await js.emit(cid, "reaction:send", {"live_id": "js1", "kind": "heart"}, ack=False)
        await wait_total(py, 20)
        for _ in range(100):
            bursts = await js.received(cid, "reaction:burst")
            if sum(b["counts"].get("heart", 0) for b in bursts) == 20:
                break
            await asyncio.sleep(0.05)
        assert burst_totals(bursts) == {"heart": 20}
    await py.close()
