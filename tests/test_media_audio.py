"""Audio rooms end to end: real python-socketio clients (and the official JS client) on /live,
the real livekit-api client against a fake LiveKit (tests/fakes/livekit.py) that checks its
JWTs and grants, records permissions and signs webhooks; real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from google.protobuf import json_format
from livekit import api

from config import Settings
from media.feature import MediaFeature
from media.stage import MAX_ON_STAGE
from server.auth import Principal, Role
from tests import jsclient
from tests.conftest import PgCluster, free_port, make_settings
from tests.fakes.livekit import FakeLiveKit
from tests.helpers import Client, ServerHandle, connect, probe_event, start_server

AUDIO_LATE = probe_event("audio:late")

LK_WS = "wss://livekit.test"


@pytest.fixture
async def livekit_fake() -> AsyncIterator[FakeLiveKit]:
    fake = FakeLiveKit()
    await fake.start(free_port())
    yield fake
    await fake.stop()


@pytest.fixture
async def settings(settings: Settings, livekit_fake: FakeLiveKit) -> Settings:
    """The conftest settings (per bus backend) pointed at the fake LiveKit."""
    settings.livekit_url = livekit_fake.url
    settings.livekit_ws_url = LK_WS
    settings.livekit_api_key = livekit_fake.api_key
    settings.livekit_api_secret = livekit_fake.api_secret
    return settings


@pytest.fixture
async def lk(server: ServerHandle, livekit_fake: FakeLiveKit) -> FakeLiveKit:
    livekit_fake.webhook_url = server.url + "/v1/webhooks/livekit"
    return livekit_fake


def ok(ack: dict[str, Any]) -> Any:
    assert ack["ok"] is True, ack
    return ack["data"]


def code(ack: dict[str, Any]) -> str:
    assert ack["ok"] is False, ack
    return str(ack["error"]["code"])


def grants(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def until(cond: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def until_version(c: Client, version: int) -> dict[str, Any]:
    """Wait until this socket received the stage:update of `version`; return it."""
    while True:
        for update in c.received["stage:update"]:
            if update["version"] == version:
                return dict(update)
        await c.wait_for("stage:update", len(c.received["stage:update"]) + 1)


async def everyone_sees(clients: list[Client], version: int) -> dict[str, Any]:
    updates = await asyncio.gather(*(until_version(c, version) for c in clients))
    assert all(u == updates[0] for u in updates)
    return updates[0]


async def open_room(
    server: ServerHandle, lk: FakeLiveKit, host: str, listeners: list[str]
) -> tuple[str, dict[str, Client], dict[str, dict[str, Any]]]:
    """The host creates and joins a room; listeners join; all connect to LiveKit."""
    clients = {host: await connect(server.url, "/live", server.token(host, "creator"))}
    room_id = ok(await clients[host].call("audio:create", {"title": "Late night talk"}))["room_id"]
    joins = {}
    for user in [host, *listeners]:
        if user not in clients:
            clients[user] = await connect(server.url, "/live", server.token(user))
        joins[user] = ok(await clients[user].call("audio:join", {"room_id": room_id}))
        await lk.join(joins[user]["livekit"]["token"])
    return room_id, clients, joins


async def close_all(clients: dict[str, Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients.values()))


# -- the stage ------------------------------------------------------------------------------


async def test_stage_host_3_speakers_20_listeners(server: ServerHandle, lk: FakeLiveKit) -> None:
    listeners = [f"l{i:02d}" for i in range(23)]
    room_id, clients, joins = await open_room(server, lk, "host", listeners)
    everyone = list(clients.values())
    lk_room = lk.rooms[room_id]

    # tokens: per room, short-lived, grants by role
    host_claims = grants(joins["host"]["livekit"]["token"])
    assert host_claims["sub"] == "host"
    assert host_claims["video"]["room"] == room_id
    assert host_claims["video"]["roomAdmin"] is True
    assert host_claims["video"]["canPublish"] is True
    assert host_claims["exp"] - host_claims["nbf"] <= 600
    listener_claims = grants(joins["l00"]["livekit"]["token"])
    assert listener_claims["video"]["canPublish"] is False
    assert listener_claims["video"]["canSubscribe"] is True
    assert listener_claims["video"]["canPublishData"] is True
    assert "roomAdmin" not in listener_claims["video"]
    assert joins["l00"]["livekit"]["url"] == LK_WS
    assert joins["l00"]["role"] == "listener"
    assert lk_room.participants["l00"].permission.can_publish is False
    with pytest.raises(PermissionError):
        lk.publish_track(room_id, "l00")

    start = (await clients["host"].call("audio:get", {"room_id": room_id}))["data"]["stage"]
    assert start["listener_count"] == 23
    assert start["host"] == "host" and start["speakers"] == []
    v0 = start["version"]
    expected: list[int] = []

    async def step(user: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        state = ok(await clients[user].call(event, {"room_id": room_id, **payload}))
        expected.append(state["version"])
        update = await everyone_sees(everyone, state["version"])
        assert {k: v for k, v in update.items() if k != "change"} == state
        return update

    # three listeners raise hands: an ordered queue
    for user in ("l00", "l01", "l02"):
        await step(user, "hand:raise", {})
    update = await everyone_sees(everyone, expected[-1])
    assert update["queue"] == ["l00", "l01", "l02"]

    # a listener cannot manage the stage; accepting needs an invitation
    assert (
        code(await clients["l05"].call("speaker:invite", {"room_id": room_id, "user_id": "l00"}))
        == "forbidden"
    )
    assert code(await clients["l00"].call("speaker:accept", {"room_id": room_id})) == "forbidden"

    # invite -> accept makes a speaker; the fake LiveKit records the new permissions
    for user in ("l00", "l01", "l02"):
        update = await step("host", "speaker:invite", {"user_id": user})
        assert user in update["invited"] and update["change"]["action"] == "invited"
        (notice,) = await clients[user].wait_for("speaker:invited")  # to the user's room
        assert notice["room_id"] == room_id
        update = await step(user, "speaker:accept", {})
        assert user in update["speakers"] and user not in update["queue"]
        perm = lk_room.participants[user].permission
        assert perm.can_publish is True
        assert list(perm.can_publish_sources) == [api.TrackSource.MICROPHONE]
        lk.publish_track(room_id, user)  # now allowed
    assert update["speakers"] == ["l00", "l01", "l02"]
    assert update["listener_count"] == 20 and update["on_stage"] == 4
    updates = lk.calls_of("UpdateParticipant")
    assert [u.identity for u in updates] == ["l00", "l01", "l02"]

    # a moderator manages too
    update = await step("host", "moderator:add", {"user_id": "l03"})
    assert update["moderators"] == ["l03"]
    assert lk_room.participants["l03"].permission.can_publish is True

    ack = await clients["l03"].call("speaker:mute", {"room_id": room_id, "user_id": "host"})
    assert code(ack) == "forbidden"  # moderators do not act on the host

    # mute goes to LiveKit's MutePublishedTrack
    update = await step("l03", "speaker:mute", {"user_id": "l01"})
    assert update["muted"] == ["l01"]
    assert all(t.muted for t in lk_room.participants["l01"].tracks)
    assert lk.calls_of("MutePublishedTrack")[0].identity == "l01"

    # demote removes publish (and LiveKit drops the published track)
    update = await step("l03", "speaker:demote", {"user_id": "l01"})
    assert update["speakers"] == ["l00", "l02"] and update["muted"] == []
    perm = lk_room.participants["l01"].permission
    assert perm.can_publish is False and list(perm.can_publish_sources) == []
    assert list(lk_room.participants["l01"].tracks) == []
    with pytest.raises(PermissionError):
        lk.publish_track(room_id, "l01")
    # moderators cannot act on each other / on the host
    assert (
        code(await clients["l03"].call("speaker:demote", {"room_id": room_id, "user_id": "host"}))
        == "forbidden"
    )

    # every change reached every socket exactly once, in order
    for c in everyone:
        seen = [u["version"] for u in c.received["stage:update"] if u["version"] > v0]
        assert seen == expected, c
    assert expected == list(range(v0 + 1, v0 + 1 + len(expected)))
    await close_all(clients)


@pytest.mark.parametrize("backend", ["memory"])
async def test_101st_on_stage_is_refused(server: ServerHandle, lk: FakeLiveKit) -> None:
    audio = server.features.media
    assert isinstance(audio, MediaFeature)
    rooms = audio.audio
    host = Principal("host", Role.CREATOR)
    room_id = (await rooms.create(host, "Full house", None))["room_id"]
    await rooms.join(host, room_id)
    for i in range(MAX_ON_STAGE - 2):  # host + 98 speakers
        p = Principal(f"s{i:03d}", Role.USER)
        await rooms.join(p, room_id)
        await rooms.invite(host, room_id, p.user_id)
        await rooms.accept(p, room_id)
    late = Principal("late", Role.USER)
    await rooms.join(late, room_id)
    await rooms.invite(host, room_id, "late")  # invited at 99 on stage

    clients = {
        u: await connect(server.url, "/live", server.token(u)) for u in ("host", "u100", "u101")
    }
    for c in clients.values():
        ok(await c.call("audio:join", {"room_id": room_id}))
    ok(await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "u100"}))
    state = ok(await clients["u100"].call("speaker:accept", {"room_id": room_id}))
    assert state["on_stage"] == MAX_ON_STAGE == 100
    # the 101st: no new invitation, and an earlier invitation cannot be accepted
    ack = await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "u101"})
    assert code(ack) == "conflict" and "full" in ack["error"]["message"]
    clients["late"] = await connect(server.url, "/live", server.token("late"))
    assert code(await clients["late"].call("speaker:accept", {"room_id": room_id})) == "conflict"
    state = ok(await clients["host"].call("audio:get", {"room_id": room_id}))["stage"]
    assert len(state["speakers"]) == 99 and "late" not in state["speakers"]
    # a seat frees up: now it works
    ok(await clients["host"].call("speaker:demote", {"room_id": room_id, "user_id": "s000"}))
    ok(await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "u101"}))
    ok(await clients["u101"].call("speaker:accept", {"room_id": room_id}))
    await close_all(clients)


# -- webhooks -------------------------------------------------------------------------------


async def post(lk: FakeLiveKit, event: api.WebhookEvent, **sign: Any) -> tuple[int, dict[str, Any]]:
    body = json_format.MessageToJson(event)
    return await lk.post_webhook(body, lk.sign(body, **sign))


@pytest.mark.parametrize("backend", ["memory"])
async def test_livekit_webhooks_verified_and_keep_the_stage_true(
    server: ServerHandle, lk: FakeLiveKit
) -> None:
    room_id, clients, joins = await open_room(server, lk, "host", ["a", "b", "c"])
    ok(await clients["a"].call("hand:raise", {"room_id": room_id}))
    ok(await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "a"}))
    state = ok(await clients["a"].call("speaker:accept", {"room_id": room_id}))
    assert state["speakers"] == ["a"]
    version = state["version"]

    # a's client vanishes: LiveKit says participant_left
    gone = lk.webhook_event(
        "participant_left", lk.rooms[room_id], lk.rooms[room_id].participants["a"]
    )
    body = json_format.MessageToJson(gone)
    forged = lk.sign(body, secret="not-the-livekit-secret-0123456789abcdef")
    stale = lk.sign(body, ttl=timedelta(minutes=-10))
    other = lk.sign(json_format.MessageToJson(lk.webhook_event("room_started", room_id)))
    for auth in (forged, stale, other, "", "Bearer garbage"):
        status, resp = await lk.post_webhook(body, auth)
        assert status == 401, resp
        assert resp["errors"][0]["code"] == "unauthorized"
    state = ok(await clients["host"].call("audio:get", {"room_id": room_id}))["stage"]
    assert state["speakers"] == ["a"] and state["version"] == version  # nothing moved

    status, resp = await lk.post_webhook(body, lk.sign(body))
    assert status == 200 and resp["data"]["outcome"] == "applied"
    update = await everyone_sees(list(clients.values()), version + 1)
    assert update["speakers"] == [] and update["listener_count"] == 2
    assert update["change"] == {"action": "left", "user_id": "a"}
    # the same delivery again does nothing
    status, resp = await lk.post_webhook(body, lk.sign(body))
    assert status == 200 and resp["data"]["outcome"] == "duplicate"

    # b is promoted while not connected to LiveKit, then connects with its old listener token:
    # the participant_joined webhook makes LiveKit apply the speaker permissions
    await lk.leave(room_id, "b")
    ok(await clients["b"].call("audio:join", {"room_id": room_id}))  # back in the room
    ok(await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "b"}))
    ok(await clients["b"].call("speaker:accept", {"room_id": room_id}))
    await lk.join(joins["b"]["livekit"]["token"])
    assert lk.rooms[room_id].participants["b"].permission.can_publish is True

    # LiveKit finished the room (e.g. empty): everyone is told, live.ended published
    status, resp = await post(lk, lk.webhook_event("room_finished", room_id))
    assert status == 200 and resp["data"]["outcome"] == "ended"
    for c in clients.values():
        (ended,) = await c.wait_for("audio:ended")
        assert ended["room_id"] == room_id
    assert code(await clients["c"].call("audio:join", {"room_id": room_id})) == "conflict"
    db = server.node.storage.db
    kinds = await db.fetch(
        "SELECT type, payload FROM events WHERE type LIKE 'live.%' AND payload->>'live_id' = $1",
        room_id,
    )
    assert sorted(r["type"] for r in kinds) == ["live.ended", "live.started"]
    assert next(r for r in kinds if r["type"] == "live.started")["payload"]["kind"] == "audio"
    await close_all(clients)


@pytest.mark.parametrize("backend", ["memory"])
async def test_webhook_for_unknown_room_is_ignored_and_bad_body_refused(
    server: ServerHandle, lk: FakeLiveKit
) -> None:
    status, resp = await post(lk, lk.webhook_event("participant_joined", "nope"))
    assert status == 200 and resp["data"]["outcome"] == "unknown room"
    body = "not json"
    status, _ = await lk.post_webhook(body, lk.sign(body))
    assert status == 400


# -- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory"])
async def test_remove_is_final_and_host_ends_the_room(
    server: ServerHandle, lk: FakeLiveKit
) -> None:
    room_id, clients, _ = await open_room(server, lk, "host", ["a", "b"])
    assert (
        code(await clients["a"].call("participant:remove", {"room_id": room_id, "user_id": "b"}))
        == "forbidden"
    )
    assert (
        code(
            await clients["host"].call(
                "participant:remove", {"room_id": room_id, "user_id": "host"}
            )
        )
        == "forbidden"
    )
    state = ok(
        await clients["host"].call("participant:remove", {"room_id": room_id, "user_id": "b"})
    )
    assert state["listener_count"] == 1
    assert [r.identity for r in lk.calls_of("RemoveParticipant")] == ["b"]
    assert "b" not in lk.rooms[room_id].participants
    (removed,) = await clients["b"].wait_for("audio:removed")
    assert removed == {"room_id": room_id}
    await lk.settle()  # LiveKit's participant_left for b changes nothing more
    ack = await clients["b"].call("audio:join", {"room_id": room_id})
    assert code(ack) == "forbidden" and "removed" in ack["error"]["message"]
    # b's socket left audio:{id}: later changes do not reach it
    state = ok(await clients["a"].call("hand:raise", {"room_id": room_id}))
    await until_version(clients["a"], state["version"])
    assert all(u["version"] < state["version"] for u in clients["b"].received["stage:update"])
    # clients cannot put themselves into audio rooms
    assert code(await clients["b"].call("room:join", {"room": f"audio:{room_id}"})) == "forbidden"

    assert code(await clients["a"].call("audio:end", {"room_id": room_id})) == "forbidden"
    info = ok(await clients["host"].call("audio:end", {"room_id": room_id}))
    assert info["state"] == "ended"
    assert [r.room for r in lk.calls_of("DeleteRoom")] == [room_id]
    for user in ("host", "a"):
        (ended,) = await clients[user].wait_for("audio:ended")
        assert ended["room_id"] == room_id
    await lk.settle()  # LiveKit's room_finished arrives after: no second ending
    assert code(await clients["a"].call("hand:raise", {"room_id": room_id})) == "conflict"
    audit = await server.node.audit.query(actor="host")
    assert [(a["action"], a["target"]) for a in audit] == [
        ("audio.end", f"audio:{room_id}"),
        ("audio.remove", "user:b"),
    ]
    await close_all(clients)


@pytest.mark.parametrize("backend", ["memory"])
async def test_livekit_refusal_changes_nothing(server: ServerHandle, lk: FakeLiveKit) -> None:
    room_id, clients, _ = await open_room(server, lk, "host", ["a"])
    ok(await clients["host"].call("speaker:invite", {"room_id": room_id, "user_id": "a"}))
    lk.fail_next("UpdateParticipant", 503)
    ack = await clients["a"].call("speaker:accept", {"room_id": room_id})
    assert code(ack) == "unavailable"
    state = ok(await clients["host"].call("audio:get", {"room_id": room_id}))["stage"]
    assert state["speakers"] == [] and state["invited"] == ["a"]  # rolled back, still invited
    ok(await clients["a"].call("speaker:accept", {"room_id": room_id}))
    bad = [
        ("audio:create", {}),
        ("audio:create", {"title": "x" * 201}),
        ("audio:join", {"room_id": "a/../b"}),
        ("speaker:invite", {"room_id": room_id}),
        ("hand:raise", {"room_id": room_id, "extra": 1}),
    ]
    for event, payload in bad:
        assert code(await clients["host"].call(event, payload)) == "bad_request"
    assert code(await clients["a"].call("audio:create", {"title": "mine"})) == "forbidden"
    assert code(await clients["a"].call("audio:join", {"room_id": "a_nope"})) == "not_found"
    await close_all(clients)


@pytest.mark.parametrize("backend", ["memory"])
async def test_scheduled_room_goes_live_when_the_host_joins(
    server: ServerHandle, lk: FakeLiveKit
) -> None:
    host = await connect(server.url, "/live", server.token("h", "creator"))
    guest = await connect(server.url, "/live", server.token("g"))
    when = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    info = ok(await host.call("audio:create", {"title": "Later", "scheduled_for": when}))
    assert info["state"] == "scheduled" and info["room_id"] not in lk.rooms
    assert code(await guest.call("audio:join", {"room_id": info["room_id"]})) == "conflict"
    joined = ok(await host.call("audio:join", {"room_id": info["room_id"]}))
    assert joined["stage"]["state"] == "live" and info["room_id"] in lk.rooms
    ok(await guest.call("audio:join", {"room_id": info["room_id"]}))
    await host.close()
    await guest.close()


async def test_without_livekit_audio_create_says_what_to_set(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(tmp_path, database_url=await pg_clusters["embedded"].fresh())
    srv = await start_server(settings, free_port())
    try:
        c = await connect(srv.url, "/live", srv.token("h", "creator"))
        ack = await c.call("audio:create", {"title": "x"})
        assert code(ack) == "unavailable"
        for var in ("OURS_LIVEKIT_URL", "OURS_LIVEKIT_API_KEY", "OURS_LIVEKIT_API_SECRET"):
            assert var in ack["error"]["message"]
        await c.close()
    finally:
        await srv.stop()


# -- several processes ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis"])
async def test_two_processes_share_the_room_and_a_restart_continues_it(
    server: ServerHandle, lk: FakeLiveKit, settings: Settings
) -> None:
    other = await start_server(settings, free_port())
    try:
        host = await connect(server.url, "/live", server.token("host", "creator"))
        room_id = ok(await host.call("audio:create", {"title": "Two nodes"}))["room_id"]
        ok(await host.call("audio:join", {"room_id": room_id}))
        users = [f"u{i}" for i in range(12)]
        clients = {}
        for i, user in enumerate(users):  # half on each process
            srv = server if i % 2 else other
            clients[user] = await connect(srv.url, "/live", srv.token(user))
            ok(await clients[user].call("audio:join", {"room_id": room_id}))
        before = ok(await host.call("audio:get", {"room_id": room_id}))["stage"]["version"]
        # concurrent changes from both processes: none lost, one version each
        acks = await asyncio.gather(
            *(c.call("hand:raise", {"room_id": room_id}) for c in clients.values())
        )
        versions = sorted(ok(a)["version"] for a in acks)
        assert versions == list(range(before + 1, before + 1 + len(users)))
        final = await everyone_sees([host, *clients.values()], versions[-1])
        assert sorted(final["queue"]) == sorted(users)
        # invite from one process, accept on the other
        ok(await host.call("speaker:invite", {"room_id": room_id, "user_id": "u0"}))
        ok(await clients["u0"].call("speaker:accept", {"room_id": room_id}))

        # the first process goes away; the host comes back through a new one
        await host.close()
        await server.stop()
        restarted = await start_server(settings, free_port())
        try:
            host = await connect(restarted.url, "/live", restarted.token("host", "creator"))
            back = ok(await host.call("audio:join", {"room_id": room_id}))
            assert back["role"] == "host"
            assert back["stage"]["speakers"] == ["u0"] and len(back["stage"]["queue"]) == 11
            state = ok(await host.call("speaker:demote", {"room_id": room_id, "user_id": "u0"}))
            update = await until_version(clients["u2"], state["version"])  # a socket on `other`
            assert update["speakers"] == []
            await host.close()
        finally:
            await restarted.stop()
        await close_all(clients)
    finally:
        await other.stop()


# -- the official JS client -----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["memory"])
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
async def test_js_client_joins_audio_and_gets_stage_updates(
    server: ServerHandle, lk: FakeLiveKit
) -> None:
    host = await connect(server.url, "/live", server.token("host", "creator"))
    room_id = ok(await host.call("audio:create", {"title": "JS"}))["room_id"]
    ok(await host.call("audio:join", {"room_id": room_id}))
    async with jsclient.JsClients() as js:
        cid, res = await js.connect(server.url, "/live", {"token": server.token("js")})
        assert res["ok"], res
        joined = ok(await js.emit(cid, "audio:join", {"room_id": room_id}))
        assert joined["role"] == "listener" and joined["livekit"]["url"] == LK_WS
        await lk.join(joined["livekit"]["token"])  # the token works at LiveKit
        ok(await js.emit(cid, "hand:raise", {"room_id": room_id}))
        invited = ok(await host.call("speaker:invite", {"room_id": room_id, "user_id": "js"}))
        # room events arrive as (data, meta) where meta holds the room offset
        raw = await js.wait(cid, "stage:update", count=3)  # joined, hand, invite
        updates = [u[0] if isinstance(u, list) else u for u in raw]
        assert [u["version"] for u in updates] == list(
            range(invited["version"] - 2, invited["version"] + 1)
        )
        assert updates[-1]["invited"] == ["js"] and updates[-1]["queue"] == ["js"]
        (notice,) = await js.wait(cid, "speaker:invited")
        notice = notice[0] if isinstance(notice, list) else notice
        assert notice["room_id"] == room_id
        accepted = ok(await js.emit(cid, "speaker:accept", {"room_id": room_id}))
        assert accepted["speakers"] == ["js"]
        assert lk.rooms[room_id].participants["js"].permission.can_publish is True
    await host.close()


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e (.ci/run does)")
@pytest.mark.parametrize("backend", ["redis"])
async def test_audio_ended_reaches_every_socket_on_every_node_before_the_room_closes(
    server: ServerHandle, lk: FakeLiveKit, settings: Settings
) -> None:
    """On Redis room events travel through the channel while closing a room is local: the
    close must wait its turn, or the sockets of the ending node never hear `audio:ended`.
    The host and python-socketio listeners, and an official JS client, on both nodes."""
    other = await start_server(settings, free_port())
    try:
        async with jsclient.JsClients() as js:
            for n in range(3):  # several rooms: a lost event shows up at once
                host = await connect(server.url, "/live", server.token("host", "creator"))
                room_id = ok(await host.call("audio:create", {"title": "Ends"}))["room_id"]
                ok(await host.call("audio:join", {"room_id": room_id}))
                clients = [host]
                for i, srv in enumerate((server, other, server, other)):
                    c = await connect(srv.url, "/live", srv.token(f"l{i}"))
                    ok(await c.call("audio:join", {"room_id": room_id}))
                    clients.append(c)
                ids = []
                for i, srv in enumerate((server, other)):
                    cid, res = await js.connect(srv.url, "/live", {"token": srv.token(f"j{n}{i}")})
                    assert res["ok"], res
                    ok(await js.emit(cid, "audio:join", {"room_id": room_id}))
                    ids.append(cid)
                ok(await host.call("audio:end", {"room_id": room_id}))
                for c in clients:
                    (ended,) = await c.wait_for("audio:ended")
                    assert ended["room_id"] == room_id
                for cid in ids:
                    (ended,) = await js.wait(cid, "audio:ended")
                    ended = ended[0] if isinstance(ended, list) else ended
                    assert ended["room_id"] == room_id
                # and the room is closed: a later room event does not reach them
                await server.node.fanout.emit(
                    AUDIO_LATE, {}, namespace="/live", room=f"audio:{room_id}"
                )
                await asyncio.sleep(0.3)
                assert all(not c.received[AUDIO_LATE] for c in clients)
                for cid in ids:
                    assert await js.received(cid, AUDIO_LATE) == []
                    await js.close(cid)
                await asyncio.gather(*(c.close() for c in clients))
    finally:
        await other.stop()
