"""End to end with the official JS socket.io-client (npm), unmodified."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests import jsclient
from tests.conftest import JWT_SECRET
from tests.helpers import ServerHandle

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
