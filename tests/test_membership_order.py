"""On Redis a room event reaches even the emitting node's sockets only when it comes back over
the channel, so a membership change made right after an emit travels the same way, in line:
every socket of the room, on every node, gets what was emitted to it before it left the room,
was disconnected or the room was closed — and nothing emitted after. This is the shape of
`audio:end` (emit, close the room), a circle removal or a live-chat ban (leave, tell, go on),
erasure (disconnect). Two nodes on Redis; python-socketio and official JS clients on each."""

from __future__ import annotations

import asyncio

import pytest

from config import Settings
from tests import jsclient
from tests.conftest import free_port
from tests.helpers import Client, ServerHandle, connect, probe_event, start_server

ORDER_BEFORE = probe_event("order:before")
ORDER_AFTER = probe_event("order:after")

NS = "/feed"


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
@pytest.mark.parametrize("backend", ["redis"])
@pytest.mark.parametrize("change", ["leave", "disconnect", "close"])
async def test_an_emit_then_a_membership_change_keeps_its_order(
    server: ServerHandle, settings: Settings, change: str
) -> None:
    other = await start_server(settings, free_port())
    fanout = server.node.fanout
    try:
        async with jsclient.JsClients() as js:
            for n in range(5):  # a lost event shows at once; five rounds make it certain
                user, room = f"u{n}", f"zone:order{n}"
                py: list[Client] = []
                ids: list[str] = []
                for node in (server, other):
                    c = await connect(node.url, NS, node.token(user))
                    assert (await c.call("room:join", {"room": room}))["ok"]
                    py.append(c)
                    cid, res = await js.connect(node.url, NS, {"token": node.token(user)})
                    assert res["ok"], res
                    assert (await js.emit(cid, "room:join", {"room": room}))["ok"]
                    ids.append(cid)

                await fanout.emit(ORDER_BEFORE, {"n": n}, namespace=NS, room=room)
                if change == "leave":
                    await fanout.leave_user(NS, user, room)
                elif change == "disconnect":
                    await fanout.disconnect_user(NS, user, "forbidden", "order test")
                else:
                    assert server.node.sio is not None
                    await server.node.sio.close_room(room, namespace=NS)
                await fanout.emit(ORDER_AFTER, {"n": n}, namespace=NS, room=room)

                for c in py:
                    (got,) = await c.wait_for(ORDER_BEFORE)
                    assert got == {"n": n}
                for cid in ids:
                    await js.wait(cid, ORDER_BEFORE)
                await asyncio.sleep(0.3)
                assert not any(c.received[ORDER_AFTER] for c in py)
                for cid in ids:
                    assert await js.received(cid, ORDER_AFTER) == []
                    await js.close(cid)
                await asyncio.gather(*(c.close() for c in py))
    finally:
        await other.stop()
