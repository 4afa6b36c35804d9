"""End to end with the official JS socket.io-client (npm), unmodified."""

from __future__ import annotations

import asyncio
import base64
import time

import jwt
import pytest

from tests import jsclient
from tests.conftest import JWT_SECRET
from tests.helpers import ServerHandle, probe_event

TEST_MIXED = probe_event("test:mixed")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)"),
]

NAMESPACES = ["/feed", "/live", "/notifications", "/messages", "/presence"]


async def test_js_client_connects_everywhere_and_gets_codes_on_refusal(
    server: ServerHandle,
) -> None:
    async with jsclient.JsClients() as js:
        token = server.token("42")
        for ns in NAMESPACES:
            _, res = await js.connect(server.url, ns, {"token": token})
            assert res["ok"], res
        expired = jwt.encode({"sub": "42", "exp": int(time.time()) - 60}, JWT_SECRET)
        _, res = await js.connect(server.url, "/feed", {"token": expired})
        assert res["ok"] is False and res["data"]["code"] == "token_expired"
        _, res = await js.connect(server.url, "/feed", {"token": "garbage"})
        assert res["ok"] is False and res["data"]["code"] == "unauthorized"
        _, res = await js.connect(server.url, "/live", {})
        assert res["data"]["code"] == "unauthorized"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_js_client_receives_room_events_and_error_acks(
    server: ServerHandle, transport: str
) -> None:
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(
            server.url, "/feed", {"token": server.token("a")}, transports=[transport]
        )
        b, _ = await js.connect(
            server.url, "/feed", {"token": server.token("b")}, transports=[transport]
        )
        ack = await js.emit(a, "room:join", {"room": "zone:music"})
        assert ack["ok"] is True and ack["data"]["room"] == "zone:music"
        # bad inputs: error acks, connection keeps working
        ack = await js.emit(a, "room:join", {"room": "conversation:9"})
        assert ack["error"]["code"] == "forbidden"
        ack = await js.emit(a, "nope:nope", {"x": 1})
        assert ack["error"]["code"] == "unknown_event"
        ack = await js.emit(a, "room:join", "not an object")
        assert ack["error"]["code"] == "bad_request"

        status, body = await server.publish(
            {
                "type": "content.created",
                "subjects": ["zone:music"],
                "payload": {"content_id": "c1", "kind": "post", "title": "héllo ✓"},
            }
        )
        assert status == 202
        (env,) = await js.wait(a, "content.created")
        assert env["id"] == body["data"]["id"]
        assert env["payload"]["title"] == "héllo ✓"
        await asyncio.sleep(0.3)
        assert await js.received(b, "content.created") == []


def b64(data: bytes) -> dict[str, str]:
    return {"binary": base64.b64encode(data).decode()}


# websocket only: on long-polling this test failed 4 times in 37 runs (a binary room emit
# overtaking the text emit before it once; a 5 s ack timeout on the 100 KB binary emit twice),
# in python-socketio's stock polling path, not the fast path; see CHANGELOG "Known issues"
@pytest.mark.parametrize("transport", ["websocket"])
async def test_js_client_binary_payloads_both_ways(server: ServerHandle, transport: str) -> None:
    """Binary packets (a placeholder packet plus attachment frames): a client's binary payload
    gets an error ack and the connection keeps working; a binary room emit reaches the client
    between text emits, in order, although text emits take the fast path and binary ones the
    engineio queue."""
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(
            server.url, "/feed", {"token": server.token("a")}, transports=[transport]
        )
        ack = await js.emit(a, "room:join", b64(b"\x00\x01zone:music"))
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        ack = await js.emit(a, "room:join", {"room": "zone:music", "blob": b64(b"\xff" * 10)})
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        ack = await js.emit(a, "room:join", b64(b"x" * 100_000))
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        assert "binary" in ack["error"]["message"]
        ack = await js.emit(a, "room:join", {"room": "zone:music"})
        assert ack["ok"] is True

        blob = bytes(range(256)) * 4
        fanout = server.node.fanout
        for n in range(6):
            data: dict[str, object] = {"n": n}
            if n % 3 == 1:
                data["blob"] = blob
            await fanout.emit(TEST_MIXED, data, namespace="/feed", room="zone:music")
        got = await js.wait(a, TEST_MIXED, 6)
        assert [e["n"] for e in got] == list(range(6))
        for e in got:
            if e["n"] % 3 == 1:
                assert base64.b64decode(e["blob"]["binary"]) == blob
            else:
                assert "blob" not in e
        # and the fast path goes on after the binary ones
        status, _ = await server.publish(
            {
                "type": "content.created",
                "subjects": ["zone:music"],
                "payload": {"content_id": "c1", "kind": "post"},
            }
        )
        assert status == 202
        await js.wait(a, "content.created")
