"""room:join / room:leave rules and the ack convention for every kind of bad input; after each
bad input the same connection still works."""

from __future__ import annotations

import pytest

from tests.helpers import Client, ServerHandle, connect


async def still_works(c: Client) -> None:
    ack = await c.call("room:join", {"room": "zone:health"})
    assert ack["ok"] is True and ack["data"]["room"] == "zone:health"
    assert ack["data"]["offset"]


async def test_join_open_rooms(server: ServerHandle) -> None:
    c = await connect(server.url, "/live", server.token("u1"))
    for room in ("zone:music", "content:c_1", "live:l-9"):
        ack = await c.call("room:join", {"room": room})
        assert ack["ok"] and ack["data"]["room"] == room
    assert await c.call("room:leave", {"room": "zone:music"}) == {
        "ok": True,
        "data": {"room": "zone:music"},
    }
    await c.close()


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("room:join", {"room": "conversation:1"}, "forbidden"),
        ("room:join", {"room": "user:someone-else"}, "forbidden"),
        ("room:join", {"room": "audio:5"}, "forbidden"),
        ("room:join", {"room": "nonsense"}, "bad_request"),
        ("room:join", {"room": "zone:" + "x" * 100}, "bad_request"),
        ("room:join", {"room": 5}, "bad_request"),
        ("room:join", {}, "bad_request"),
        ("room:join", {"room": "zone:a", "extra": 1}, "bad_request"),
        ("room:join", "zone:a", "bad_request"),
        ("room:join", ["zone:a"], "bad_request"),
        ("room:join", None, "bad_request"),
        ("room:join", {"room": "zone:a", "pad": "x" * 70_000}, "payload_too_large"),
        ("room:leave", {"room": "user:me"}, "forbidden"),
        ("no:such:event", {"a": 1}, "unknown_event"),
        ("message:send", {"body": "hi"}, "unknown_event"),  # not on /feed
    ],
)
async def test_bad_input_gets_error_ack_and_connection_keeps_working(
    server: ServerHandle, event: str, payload: object, code: str
) -> None:
    c = await connect(server.url, "/feed", server.token("me"))
    ack = await c.call(event, payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == code
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
    await still_works(c)
    await c.close()


async def test_field_errors_are_listed(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("me"))
    ack = await c.call("room:join", {"rooom": "zone:a"})
    fields = {d["field"] for d in ack["error"]["details"]}
    assert fields == {"room", "rooom"}
    await c.close()


async def test_room_cap_per_socket(server: ServerHandle) -> None:
    cap = server.settings.max_rooms_per_socket
    c = await connect(server.url, "/feed", server.token("me"))
    for i in range(cap):
        assert (await c.call("room:join", {"room": f"zone:z{i}"}))["ok"]
    ack = await c.call("room:join", {"room": "zone:one-too-many"})
    assert ack["error"]["code"] == "forbidden"
    assert (await c.call("room:leave", {"room": "zone:z0"}))["ok"]
    assert (await c.call("room:join", {"room": "zone:one-too-many"}))["ok"]
    await c.close()


async def test_unknown_event_without_ack_does_not_break_connection(server: ServerHandle) -> None:
    c = await connect(server.url, "/presence", server.token("me"))
    await c.sio.emit("whatever", {"x": 1}, namespace="/presence")
    ack = await c.call("room:join", {"room": "zone:a"})  # /presence has no room:join
    assert ack["error"]["code"] == "unknown_event"
    await c.close()


async def test_binary_payload_is_a_bad_request(server: ServerHandle) -> None:
    c = await connect(server.url, "/feed", server.token("me"))
    ack = await c.call("room:join", b"\x00\x01binary")
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
    await still_works(c)
    await c.close()
