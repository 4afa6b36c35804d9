"""The socket contract: /v1/asyncapi.json against the handlers the namespaces register, and
against what a real server answers — each documented client event, sent with its documented
example by a real python-socketio client, gets an ack that validates against the documented
ack schema; sent with an invalid payload, it gets the documented `bad_request`. (Every ack and
server event of every other test is also checked at runtime: `check_contract`.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from namespaces import ALL as NAMESPACES
from server.asyncapi import asyncapi_document
from server.sockets import Undocumented
from tests.conftest import PgCluster, free_port, make_settings
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.livekit import FakeLiveKit
from tests.helpers import ServerHandle, connect, connect_error, start_server


def _key(name: str) -> str:
    return "client." + name.replace(":", ".")


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema of the document whose `$ref`s point into the document."""
    return Draft202012Validator({**schema, "components": doc["components"]})


def test_every_handler_is_in_the_document_and_back() -> None:
    """Each client event a namespace handles is a `receive` operation of its channel with a
    payload, an ack reply and an example when the payload has required fields; each such
    operation is a handler. Removing one declaration fails this test."""
    doc = asyncapi_document(NAMESPACES)
    problems = []
    documented: set[tuple[str, str]] = set()
    for op_id, op in doc["operations"].items():
        channel = op["channel"]["$ref"].rsplit("/", 1)[1]
        if op["action"] == "receive" and not op_id.endswith(".connect"):
            documented.add((channel, op_id.removeprefix(channel + ".")))
    for path, cls in NAMESPACES.items():
        channel = path.strip("/")
        assert doc["channels"][channel]["address"] == path
        for name, ce in cls.client_events().items():
            key = _key(name)
            op = doc["operations"].get(f"{channel}.{key}")
            if op is None or (channel, key) not in documented:
                problems.append(f"{path} {name}: not in the document")
                continue
            documented.discard((channel, key))
            if ce.ack is Undocumented:
                problems.append(f"{path} {name}: no ack declared (@handles ack=...)")
            if not ce.summary:
                problems.append(f"{path} {name}: no summary (the handler's docstring)")
            if ce.model.model_json_schema().get("required") and ce.example is None:
                problems.append(f"{path} {name}: required fields but no example")
            if "reply" not in op:
                problems.append(f"{path} {name}: no ack reply")
    problems += [f"/{c} {k}: documented but not handled" for c, k in sorted(documented)]
    assert not problems, problems


def test_every_server_event_is_a_send_operation() -> None:
    from server.events import EVENT_TYPES
    from server.server_events import server_events

    doc = asyncapi_document(NAMESPACES)
    sent = set()
    for op in doc["operations"].values():
        if op["action"] != "send":
            continue
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
        for ref in op["messages"]:
            via = channel["messages"][ref["$ref"].rsplit("/", 1)[1]]["$ref"]
            sent.add(doc["components"]["messages"][via.rsplit("/", 1)[1]]["name"])
    assert set(server_events()) | set(EVENT_TYPES) <= sent


@pytest.fixture
async def node(tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> AsyncIterator[ServerHandle]:
    """A node on the embedded default with audio rooms on (the fake LiveKit) and attachments
    on (the fake Cloudflare)."""
    dsn = await pg_clusters["embedded"].fresh()
    fake = FakeLiveKit()
    await fake.start(free_port())
    cf = FakeCloudflare()
    await cf.start(free_port())
    signing_key_id, signing_key_pem = cf.create_signing_key()
    settings = make_settings(
        tmp_path,
        database_url=dsn,
        livekit_url=fake.url,
        livekit_ws_url="wss://livekit.test",
        livekit_api_key=fake.api_key,
        livekit_api_secret=fake.api_secret,
        cloudflare_account_id=cf.account_id,
        cloudflare_api_token=cf.api_token,
        cloudflare_base_url=cf.base_url,
        cloudflare_signing_key_id=signing_key_id,
        cloudflare_signing_key_pem=signing_key_pem,
        cloudflare_images_account_hash="contract-hash",
        cloudflare_images_signing_key="contract-images-key",
    )
    handle = await start_server(settings, free_port())
    try:
        yield handle
    finally:
        await handle.stop()
        await fake.stop()
        await cf.stop()


#: the order a user would send them in (an event not named here goes in the middle, by name):
#: what creates a thing before what names it, what ends or removes it last
ORDER = [
    "room:join",
    "conversation:create",
    "conversation:open",
    "message:send",
    "message:edit",
    "message:history",
    "message:read",
    "message:delivered",
    "tip:send",
    "message:schedule",
    "message:scheduled",
    "message:cancel",
    "audio:create",
    "audio:join",
    "audio:get",
    "hand:raise",
    "hand:lower",
    "speaker:invite",
    "speaker:accept",
    "speaker:mute",
    "speaker:unmuted",
    "speaker:demote",
    "speaker:decline",
    "moderator:add",
    "chat:send",
    "chat:history",
    "reaction:send",
    "chat:slowmode",
    "activity:optin",
    "activity:share",
    "device:register",
    "~middle~",
    "chat:delete",
    "chat:timeout",
    "chat:ban",
    "chat:unban",
    "message:delete",
    "conversation:add",
    "conversation:remove",
    "conversation:leave",
    "participant:remove",
    "audio:leave",
    "audio:end",
    "activity:delete",
    "device:unregister",
    "room:leave",
]
#: sent by the other user (the one invited, or the listener), not the host
BY_BOB = {"hand:raise", "speaker:accept", "speaker:unmuted", "speaker:decline"}
#: the placeholder an event's ack fills (its data's `id`), when not `<noun>_id`
LEARNS = {
    "conversation:create": "conversation_id",
    "message:send": "message_id",
    "message:schedule": "note_id",
    "audio:create": "audio_room_id",
    "chat:send": "message_id",
    "activity:share": "activity_id",
}
PLACEHOLDER = re.compile(r"^<(\w+)>$")


def _order(names: list[str]) -> list[str]:
    middle = ORDER.index("~middle~")
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, middle), n))


def _fill(example: Any, context: dict[str, Any]) -> Any:
    if isinstance(example, dict):
        return {k: _fill(v, context) for k, v in example.items()}
    if isinstance(example, list):
        return [_fill(v, context) for v in example]
    if isinstance(example, str):
        m = PLACEHOLDER.match(example)
        if m:
            assert m.group(1) in context, f"no earlier ack gave {example}"
            return context[m.group(1)]
    return example


async def test_each_documented_example_gets_a_documented_ack(node: ServerHandle) -> None:
    """On every namespace, every client event in the document, sent with its example (ids the
    server makes filled in from earlier acks) by a real client: the example is valid for the
    documented payload schema, the ack is `ok` and its data validates against the documented
    ack schema."""
    async with aiohttp.ClientSession() as s, s.get(node.url + "/v1/asyncapi.json") as r:
        doc = await r.json()
    messages = doc["components"]["messages"]
    await node.features.ledger.service.grant("test", "u_alice", Decimal(100), "contract-grant")
    status, _ = await node.publish(
        {
            "type": "live.started",
            "subjects": ["live:jazz-night"],
            "payload": {"live_id": "jazz-night", "host_id": "u_alice"},
        }
    )
    assert status == 202
    tokens = {"alice": node.token("u_alice", role="admin"), "bob": node.token("u_bob")}
    refused: dict[str, Any] = {}
    sent = 0
    for path, cls in NAMESPACES.items():
        channel = path.strip("/")
        alice = await connect(node.url, path, tokens["alice"])
        bob = await connect(node.url, path, tokens["bob"])
        context: dict[str, Any] = {"a_fresh_JWT": tokens["alice"]}
        try:
            for name in _order(list(cls.client_events())):
                request = messages[f"{channel}.{_key(name)}"]
                ack_schema = messages[f"{channel}.{_key(name)}.ack"]["payload"]
                example = (request.get("examples") or [{"payload": {}}])[0]["payload"]
                payload = (
                    {"token": tokens["alice"]}
                    if name == "auth:refresh"
                    else _fill(example, context)
                )
                problems = list(_validator(doc, request["payload"]).iter_errors(payload))
                assert not problems, f"{path} {name}: example {payload}: {problems[0]}"
                sender = bob if name in BY_BOB else alice
                for _ in range(50):  # the live started above is consumed in the background
                    ack = await sender.call(name, payload, timeout=10)
                    if ack["ok"] or not name.startswith(("chat:", "reaction:")):
                        break
                    await asyncio.sleep(0.1)
                sent += 1
                errors = sorted(_validator(doc, ack_schema).iter_errors(ack), key=str)
                assert not errors, f"{path} {name}: ack {ack} does not match: {errors[0]}"
                if not ack["ok"]:
                    refused[f"{path} {name}"] = ack["error"]
                    continue
                data = ack["data"]
                learns = LEARNS.get(name, name.split(":")[0] + "_id")
                if isinstance(data, dict) and learns not in context:
                    found = data.get("id", data.get(learns, data.get("room_id")))
                    if found is not None:
                        context[learns] = found
                if name == "audio:create":  # the listener who raises a hand, is invited, ...
                    joined = await bob.call("audio:join", {"room_id": context["audio_room_id"]})
                    assert joined["ok"], joined
                if name == "room:join" and path == "/live":
                    joined = await bob.call("room:join", {"room": "live:jazz-night"})
                    assert joined["ok"], joined
        finally:
            await alice.close()
            await bob.close()
    assert sent == sum(len(cls.client_events()) for cls in NAMESPACES.values())
    assert not refused, f"documented examples refused: {refused}"


async def test_an_invalid_payload_gets_the_documented_error(node: ServerHandle) -> None:
    """Every client event, sent a payload that is not an object and one with a field its model
    does not know: `bad_request` (documented for every event), and the socket keeps working."""
    doc = asyncapi_document(NAMESPACES)
    token = node.token("u_alice")
    for path, cls in NAMESPACES.items():
        channel = path.strip("/")
        client = await connect(node.url, path, token)
        try:
            for name, ce in cls.client_events().items():
                ack_doc = doc["components"]["messages"][f"{channel}.{_key(name)}.ack"]
                assert "bad_request" in ack_doc["x-error-codes"]
                ack = await client.call(name, ["not", "an", "object"])
                assert ack["ok"] is False and ack["error"]["code"] == "bad_request", (name, ack)
                if ce.model.model_config.get("extra") == "forbid":
                    bad = {**(ce.example or {}), "zz_not_a_field": 1}
                    ack = await client.call(name, bad)
                    assert ack["ok"] is False, (name, ack)
                    assert ack["error"]["code"] == "bad_request", (name, ack)
                    fields = [d["field"] for d in ack["error"]["details"]]
                    assert "zz_not_a_field" in fields, (name, ack)
            ack = await client.call("auth:refresh", {"token": token})
            assert ack["ok"] is True, ack
        finally:
            await client.close()


async def test_connect_error_data_is_as_documented(node: ServerHandle) -> None:
    doc = asyncapi_document(NAMESPACES)
    schema = doc["components"]["messages"]["feed.connect_error"]["payload"]
    for auth in ({}, {"token": "not-a-jwt"}, {"token": node.token("u_x", ttl=-60)}):
        data = await connect_error(node.url, "/feed", auth)
        errors = list(_validator(doc, schema).iter_errors(data))
        assert not errors, (auth, data, errors[0])


async def test_recovery_handshake_is_as_documented(node: ServerHandle) -> None:
    """`auth.recover` as documented is accepted; `session:recovered` matches its schema."""
    doc = asyncapi_document(NAMESPACES)
    token = node.token("u_r")
    first = await connect(node.url, "/feed", token)
    joined = await first.call("room:join", {"room": "zone:contract"})
    await first.close()
    auth_schema = doc["components"]["messages"]["feed.connect"]["payload"]
    auth = {"token": token, "recover": {"zone:contract": joined["data"]["offset"]}}
    assert not list(_validator(doc, auth_schema).iter_errors(auth))
    again = await connect(node.url, "/feed", None, auth=auth)
    try:
        (recovered,) = await again.wait_for("session:recovered")
        schema = doc["components"]["messages"]["feed.server.session.recovered"]["payload"]
        assert not list(_validator(doc, schema).iter_errors(recovered)), recovered
        assert recovered["recovered"] is True
    finally:
        await again.close()
