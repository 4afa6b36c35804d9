"""A user's data and the audit log: export then erase (nothing of theirs left in any table or
Redis key), the append-only audit log and its one erasure path, roles on the audio stage with
every moderator action in GET /v1/admin/audit, and audited DLQ replays from the CLI. Real
clients, real PostgreSQL and Redis, the real livekit-api client against tests/fakes/livekit.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from config import Settings
from privacy.erase import SWEEP_JOB, pseudonym
from server import redis_client
from server.audit import AuditLog
from server.auth import Principal, Role
from server.storage import Storage
from tests.conftest import API_KEY, free_port, make_settings
from tests.fakes.livekit import FakeLiveKit
from tests.helpers import ROOT, Client, ServerHandle, connect, settings_env, start_server


def ok(ack: dict[str, Any]) -> Any:
    assert ack["ok"] is True, ack
    return ack["data"]


def code(ack: dict[str, Any]) -> str:
    assert ack["ok"] is False, ack
    return str(ack["error"]["code"])


async def until(cond: Callable[[], Awaitable[Any]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def http(
    server: ServerHandle, method: str, path: str, bearer: str, body: Any = None
) -> tuple[int, dict[str, Any], Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
        s.request(
            method, server.url + path, json=body, headers={"Authorization": f"Bearer {bearer}"}
        ) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def audit(server: ServerHandle, query: str = "") -> list[dict[str, Any]]:
    status, _, body = await http(server, "GET", "/v1/admin/audit" + query, API_KEY)
    assert status == 200, body
    return list(body["data"])


# -- what is left of a user -----------------------------------------------------------------


async def rows_naming(db: Any, needle: str) -> list[str]:
    """Every text, uuid, json and array column of every table in the schema that holds
    `needle` (information_schema decides what is scanned, so new tables are covered)."""
    columns = await db.fetch(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t"
        "   ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
        " AND c.data_type IN ('text', 'character varying', 'character', 'uuid', 'json',"
        "   'jsonb', 'ARRAY')"
        " ORDER BY 1, 2"
    )
    assert len(columns) > 50  # the scan really sees the schema
    found = []
    for r in columns:
        t, c = r["table_name"], r["column_name"]
        n = await db.fetchval(
            f'SELECT count(*) FROM "{t}" WHERE position($1 IN "{c}"::text) > 0', needle
        )
        if n:
            found.append(f"{t}.{c}")
    return found


#: the bus stream is a transport buffer (trimmed by MAXLEN) whose durable copy, the `events`
#: table, is anonymized; see privacy/erase.py and the features' erase_user
def bus_streams(prefix: str) -> set[str]:
    return {f"{prefix}:events", f"{{{prefix}:events}}:dlq"}


async def keys_naming(settings: Settings, needle: str) -> list[str]:
    """Every Redis key of this test's prefix whose name or content holds `needle` (on a Redis
    Cluster, SCAN goes to every primary)."""
    prefix, url = settings.redis_prefix, settings.redis_url
    assert url is not None
    r: Any = redis_client.connect(url, cluster=settings.redis_cluster)
    found = []
    try:
        async for key in r.scan_iter(match=f"*{prefix}*", count=1000):
            if key in bus_streams(prefix):
                continue
            kind = await r.type(key)
            values: list[Any] = [key]
            if kind == "string":
                values.append(await r.get(key))
            elif kind == "hash":
                values += [*(await r.hgetall(key)).items()]
            elif kind == "set":
                values += list(await r.smembers(key))
            elif kind == "zset":
                values += await r.zrange(key, 0, -1)
            elif kind == "list":
                values += await r.lrange(key, 0, -1)
            elif kind == "stream":
                values += [f for _, f in await r.xrange(key)]
            if any(needle in str(v) for v in values):
                found.append(f"{kind} {key}")
    finally:
        await r.aclose()
    return found


async def bus_idle(server: ServerHandle) -> bool:
    return all(n == 0 for n in (await server.node.bus.lag()).values())


async def seed_rows(db: Any, uid: str, pal: str) -> None:
    """Rows whose APIs need provider fakes (LiveKit, Cloudflare, Telegram) or another issue's
    events: written as those modules write them."""
    chat = int(uuid.uuid4().int % 10**9) + 10**9
    await db.execute(
        "INSERT INTO audio_rooms (id, host_id, title, state) VALUES ($1, $2, 'mine', 'ended'),"
        " ($3, $4, 'theirs', 'live')",
        f"a_{uid}",
        uid,
        f"a_{pal}",
        pal,
    )
    await db.execute(
        "INSERT INTO audio_members (room_id, user_id, role) VALUES ($1, $2, 'listener')",
        f"a_{pal}",
        uid,
    )
    await db.execute(
        "INSERT INTO media (uid, creator_id, kind, title) VALUES ($1, $2, 'video', 'my video')",
        uuid.uuid4().hex,
        uid,
    )
    await db.execute(
        "INSERT INTO live_inputs (uid, creator_id, rtmps_url, stream_key)"
        " VALUES ($1, $2, 'rtmps://live.test/', '\\x00'::bytea)",
        uuid.uuid4().hex,
        uid,
    )
    await db.execute(
        "INSERT INTO lives (id, host_id, state, event_ts) VALUES ('l_mine', $1, 'live', now()),"
        " ('l_pal', $2, 'live', now())",
        uid,
        pal,
    )
    await db.execute(
        "INSERT INTO live_chat_messages (id, live_id, user_id, client_msg_id, body)"
        " VALUES ($1, 'l_pal', $2, 'c1', 'hi all')",
        uuid.uuid4(),
        uid,
    )
    await db.execute(
        "INSERT INTO live_chat_messages (id, live_id, user_id, client_msg_id, body, deleted_at,"
        " deleted_by) VALUES ($1, 'l_mine', $2, 'c2', NULL, now(), $3)",
        uuid.uuid4(),
        pal,
        uid,
    )
    await db.execute(
        "INSERT INTO live_chat_restrictions (live_id, user_id, kind, by_user, reason)"
        " VALUES ('l_pal', $1, 'ban', 'mod-1', $2), ('l_mine', $3, 'ban', $1, 'rude')",
        uid,
        f"spam from {uid}",
        pal,
    )
    await db.execute(
        "INSERT INTO telegram_links (user_id, chat_id, role) VALUES ($1, $2, 'user')", uid, chat
    )
    await db.execute(
        "INSERT INTO telegram_link_codes (code_hash, user_id, role, tz, expires_at)"
        " VALUES ($1, $2, 'user', 'UTC', now())",
        uuid.uuid4().bytes,
        uid,
    )
    await db.execute(
        "INSERT INTO bot_briefs_sent (user_id, local_date, chat_id) VALUES ($1, now(), $2)",
        uid,
        chat,
    )
    await db.execute("INSERT INTO telegram_blocked_chats (chat_id) VALUES ($1)", chat)
    await db.execute(
        "INSERT INTO bot_alerts_sent (alert_key, chat_id, rule) VALUES ('k', $1, 'tips')", chat
    )


async def test_export_then_delete_leaves_no_row_or_key_of_theirs(server: ServerHandle) -> None:
    node, db = server.node, server.node.storage.db
    tag = uuid.uuid4().hex[:10]
    uid, pal = f"gone-{tag}", f"pal-{tag}"
    eraser = server.features.privacy.eraser
    eraser.sweeps = (timedelta(hours=1), timedelta(hours=2))  # made due by hand below

    # -- a life on the platform ------------------------------------------------------------
    me = await connect(server.url, "/messages", server.token(uid))
    other = await connect(server.url, "/messages", server.token(pal))
    direct = ok(await me.call("conversation:open", {"user_id": pal}))["id"]
    ok(await me.call("message:send", {"conversation_id": direct, "client_msg_id": "m1",
                                       "body": "hello from me"}))  # fmt: skip
    ok(await other.call("message:send", {"conversation_id": direct, "client_msg_id": "m2",
                                          "body": "hi back"}))  # fmt: skip
    circle = ok(await me.call("conversation:create", {"title": "circle", "members": [pal]}))["id"]
    ok(await me.call("message:send", {"conversation_id": circle, "client_msg_id": "g1",
                                       "body": "in the circle"}))  # fmt: skip
    ledger = server.features.ledger.service
    await ledger.grant("admin", uid, Decimal("50"), f"grant-{tag}")
    ok(await me.call("tip:send", {"conversation_id": direct, "amount": 5, "client_msg_id": "t1"}))
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ok(await me.call("message:schedule", {"conversation_id": direct, "body": "a note for later",
                                           "deliver_at": later}))  # fmt: skip
    inbox = await connect(server.url, "/notifications", server.token(uid))
    ok(
        await inbox.call(
            "preferences:set", {"email": "gone@example.com", "timezone": "Europe/Berlin"}
        )
    )
    ok(await inbox.call("device:register", {"token": f"fcm-{tag}", "platform": "android"}))
    presence = await connect(server.url, "/presence", server.token(uid))
    feed = await connect(server.url, "/feed", server.token(uid))
    ok(await feed.call("activity:optin", {"enabled": True}))
    ok(await feed.call("activity:share", {"text": "Reading Dune", "kind": "reading"}))
    status, _ = await server.publish(
        {"type": "user.followed", "payload": {"follower_id": uid, "followee_id": pal}}
    )
    assert status == 202
    await AuditLog(node.storage).record(
        Principal("mod-1", Role.MODERATOR), "chat.ban", f"user:{uid}", f"spam from {uid}",
        {"live_id": "l_pal", "user_id": uid},
    )  # fmt: skip
    await seed_rows(db, uid, pal)

    async def notified() -> bool:
        n = await db.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", uid)
        m = await db.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND $2 = ANY(actors)", pal, uid
        )
        return bool(n and m) and await bus_idle(server)

    await until(notified)
    before = await rows_naming(db, uid)
    for table in ("messages.sender_id", "audit_log.target", "events.actor", "jobs.payload",
                  "notifications.actors", "hours_accounts.account", "telegram_links.user_id",
                  "activity_entries.user_id", "live_chat_messages.user_id"):  # fmt: skip
        assert table in before, (table, before)
    if node.settings.redis_url:
        assert len(await keys_naming(node.settings, uid)) >= 3  # buckets, presence, room logs

    # -- export ------------------------------------------------------------------------------
    status, headers, body = await http(server, "GET", "/v1/me/export", server.token(uid))
    assert status == 200, body
    assert "attachment" in headers["Content-Disposition"]
    archive = body["data"]
    assert archive["user_id"] == uid and archive["format"] == "ours-export/1"
    bodies = {m["body"] for ms in archive["messages"].values() for m in ms}
    assert {"hello from me", "hi back", "in the circle", "tipped 5 HOURS"} <= bodies
    assert {c["id"] for c in archive["conversations"]} == {direct, circle}
    assert [n["body"] for n in archive["scheduled_notes"]] == ["a note for later"]
    assert archive["hours"]["balance"] == "45.00"
    assert len(archive["hours"]["transfers"]) == 2 and len(archive["hours"]["ledger_entries"]) == 2
    assert archive["preferences"]["email"] == "gone@example.com"
    assert [d["platform"] for d in archive["devices"]] == ["android"]
    assert archive["notifications"] and archive["deliveries"]
    assert [e["text"] for e in archive["activity"]["entries"]] == ["Reading Dune"]
    assert {a["action"] for a in archive["audit"]} >= {"chat.ban", "hours.grant"}
    assert archive["profile"]["telegram"]["role"] == "user"
    assert len(archive["profile"]["telegram_link_codes"]) == 1
    assert archive["profile"]["presence"]["invisible"] is False
    assert [v["title"] for v in archive["media"]["videos"]] == ["my video"]
    assert "stream_key" not in archive["media"]["live_inputs"][0]
    assert [m["body"] for m in archive["live_chat"]["messages"]] == ["hi all"]
    assert archive["live_chat"]["restrictions"][0]["reason"] == f"spam from {uid}"
    assert [r["room_id"] for r in archive["audio"]["memberships"]] == [f"a_{pal}"]
    assert {e["type"] for e in archive["events"]} >= {"message.sent", "hours.tipped"}

    # -- delete ------------------------------------------------------------------------------
    status, _, body = await http(
        server, "DELETE", "/v1/me", server.token(uid), {"reason": "leaving"}
    )
    assert status == 200, body
    ps = body["data"]["pseudonym"]
    assert ps == pseudonym(node.keyring.current, uid) and ps.startswith("erased:")
    assert body["data"]["rows"]["messages (tombstoned)"] == 3  # two texts and the tip
    for c in (me, inbox, presence, feed):  # every namespace, told why
        await c.wait_for("server:disconnect")
        assert c.received["server:disconnect"][0]["code"] == "account_deleted"

    async def all_closed() -> bool:
        return not any(c.sio.connected for c in (me, inbox, presence, feed))

    await until(all_closed)

    # a late write: an event about them still on its way is consumed after the erasure ...
    status, _ = await server.publish(
        {"type": "user.followed", "payload": {"follower_id": pal, "followee_id": uid}}
    )
    assert status == 202

    async def late_row() -> bool:
        n = await db.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", uid)
        return bool(n) and await bus_idle(server)

    await until(late_row)
    # ... and the follow-up sweeps (durable jobs; made due now) remove it
    await db.execute("UPDATE jobs SET run_at = now() WHERE kind = $1", SWEEP_JOB)

    async def swept() -> bool:
        return not await db.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", SWEEP_JOB)

    await until(swept)
    assert await rows_naming(db, uid) == []
    if node.settings.redis_url:
        assert await keys_naming(node.settings, uid) == []

    # -- what others keep --------------------------------------------------------------------
    history = ok(await other.call("message:history", {"conversation_id": direct}))["messages"]
    assert [m["sender_id"] for m in history if m["body"] == "hi back"] == [pal]
    assert [m["sender_id"] for m in history if m["deleted"]] == [ps, ps]  # hello, tip
    convs = ok(await other.call("conversation:list", {}))["conversations"]
    circle_row = next(c for c in convs if c["id"] == circle)
    assert circle_row["owner_id"] == pal and circle_row["members"] == [pal]
    assert await db.fetchval("SELECT sum(amount) FROM ledger_entries") == 0
    assert await db.fetchval(
        "SELECT balance FROM hours_accounts WHERE account = $1", f"user:{ps}"
    ) == Decimal("45.00")
    assert await db.fetchval(
        "SELECT balance FROM hours_accounts WHERE account = $1", f"user:{pal}"
    ) == Decimal("5.00")
    (erasure,) = await audit(server, "?action=privacy.erase")
    assert (erasure["actor_id"], erasure["target"], erasure["reason"]) == (
        ps,
        f"user:{ps}",
        "leaving",
    )
    assert erasure["details"]["by"] == "self"
    (ban,) = await audit(server, "?action=chat.ban")
    assert (ban["actor_id"], ban["target"], ban["reason"]) == (
        "mod-1",
        f"user:{ps}",
        f"spam from {ps}",
    )
    assert [e["action"] for e in await audit(server, f"?actor={ps}&action=privacy.export")] == [
        "privacy.export"
    ]
    assert await audit(server, "?action=privacy.erase_sweep")  # the late row was found
    await other.close()


async def test_only_admins_erase_other_users(server: ServerHandle) -> None:
    status, _, body = await http(server, "DELETE", "/v1/admin/users/victim", server.token("eve"))
    assert status == 403 and body["errors"][0]["code"] == "forbidden"
    status, _, body = await http(server, "DELETE", "/v1/admin/users/not%20an%20id", API_KEY)
    assert status == 400
    victim = await connect(server.url, "/feed", server.token("victim"))
    ok(await victim.call("activity:optin", {"enabled": True}))
    status, _, body = await http(
        server, "DELETE", "/v1/admin/users/victim", server.token("root", "admin"),
        {"reason": "court order"},
    )  # fmt: skip
    assert status == 200 and body["data"]["erased"] is True
    db = server.node.storage.db
    assert await db.fetchval("SELECT count(*) FROM activity_optins WHERE user_id = 'victim'") == 0
    await victim.wait_for("server:disconnect")

    async def closed() -> bool:
        return not victim.sio.connected

    await until(closed)
    (entry,) = await audit(server, "?action=privacy.erase")
    assert entry["actor_id"] == "root" and entry["details"]["by"] == "admin"
    assert entry["reason"] == "court order"
    assert entry["target"] == "user:" + body["data"]["pseudonym"]


# -- the audit log itself -------------------------------------------------------------------


@pytest.fixture
async def storage(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Storage]:
    s = Storage(make_settings(tmp_path, database_url=pg_dsn))
    await s.open(migrate=True)
    yield s
    await s.close()


async def test_audit_log_refuses_changes_except_the_erasure_substitution(storage: Storage) -> None:
    db, log = storage.db, AuditLog(storage)
    await log.record(Principal("m1", Role.MODERATOR), "chat.timeout", "user:u_9", "u_9 flooded",
                     {"user_id": "u_9", "seconds": 60, "live_id": "u_9x"})  # fmt: skip
    await log.record("u_9", "privacy.export", "user:u_9")
    for sql in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute(sql)
    # the erasure setting alone does not open the table to other changes
    ps = "erased:" + "ab" * 10
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="only an erasure"):
            async with conn.transaction():
                await conn.execute("SELECT set_config('ours.erase_subject', $1, true)", f"u_9 {ps}")
                await conn.execute("UPDATE audit_log SET action = 'x' WHERE actor_id = 'm1'")
        async with conn.transaction():
            assert await conn.fetchval("SELECT audit_log_erase_subject('u_9', $1)", ps) == 2
            assert await conn.fetchval("SELECT current_setting('ours.erase_subject', true)") == ""
    rows = {r["action"]: r for r in await log.query()}
    timeout = rows["chat.timeout"]
    assert (timeout["actor_id"], timeout["target"], timeout["reason"]) == (
        "m1",
        f"user:{ps}",
        f"{ps} flooded",
    )
    # person fields are replaced, other values that merely contain the id are not
    assert timeout["details"] == {"user_id": ps, "seconds": 60, "live_id": "u_9x"}
    assert rows["privacy.export"]["actor_id"] == ps
    with pytest.raises(asyncpg.RaiseError):
        await db.execute("UPDATE audit_log SET reason = NULL")


# -- roles and moderation on the audio stage ------------------------------------------------


@pytest.fixture
async def audio_server(settings: Settings) -> AsyncIterator[tuple[ServerHandle, FakeLiveKit]]:
    lk = FakeLiveKit()
    await lk.start(free_port())
    settings.livekit_url = lk.url
    settings.livekit_ws_url = "wss://livekit.test"
    settings.livekit_api_key = lk.api_key
    settings.livekit_api_secret = lk.api_secret
    server = await start_server(settings, free_port())
    lk.webhook_url = server.url + "/v1/webhooks/livekit"
    yield server, lk
    await server.stop()
    await lk.stop()


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_listener_cannot_moderate_and_every_moderator_action_is_audited(
    audio_server: tuple[ServerHandle, FakeLiveKit],
) -> None:
    server, lk = audio_server
    clients: dict[str, Client] = {}
    for user, role in (("host", "creator"), ("l1", "user"), ("s1", "user"), ("l2", "user")):
        clients[user] = await connect(server.url, "/live", server.token(user, role))
    host, l1, s1 = clients["host"], clients["l1"], clients["s1"]
    room = ok(await host.call("audio:create", {"title": "Town hall"}))["room_id"]
    for c in clients.values():
        joined = ok(await c.call("audio:join", {"room_id": room}))
        await lk.join(joined["livekit"]["token"])

    # a listener cannot moderate: every stage action is refused with `forbidden`
    for event, data in (
        ("speaker:invite", {"room_id": room, "user_id": "s1"}),
        ("participant:remove", {"room_id": room, "user_id": "l2"}),
        ("moderator:add", {"room_id": room, "user_id": "l2"}),
        ("audio:end", {"room_id": room}),
    ):
        assert code(await l1.call(event, data)) == "forbidden", event
    assert code(await clients["l2"].call("audio:create", {"title": "x"})) == "forbidden"
    assert await audit(server, "?actor=l1") == []

    # the host moderates; each action is in the audit log with actor, target, time
    started = datetime.now(UTC) - timedelta(seconds=5)
    ok(await host.call("speaker:invite", {"room_id": room, "user_id": "s1"}))
    ok(await s1.call("speaker:accept", {"room_id": room}))
    ok(await host.call("speaker:mute", {"room_id": room, "user_id": "s1"}))
    ok(await host.call("speaker:demote", {"room_id": room, "user_id": "s1"}))
    ok(await host.call("participant:remove", {"room_id": room, "user_id": "l2"}))
    ok(await host.call("audio:end", {"room_id": room}))
    entries = await audit(server, "?actor=host")
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("audio.invite", "user:s1"),
        ("audio.mute", "user:s1"),
        ("audio.demote", "user:s1"),
        ("audio.remove", "user:l2"),
        ("audio.end", f"audio:{room}"),
    ]
    for e in entries:
        assert e["actor_role"] == "creator" and e["details"]["room_id"] == room
        assert datetime.fromisoformat(e["at"]) >= started

    # the filters: target, action, since, paging with before_id and limit
    assert [e["action"] for e in await audit(server, "?target=user:s1")] == [
        "audio.demote",
        "audio.mute",
        "audio.invite",
    ]
    assert len(await audit(server, "?action=audio.remove")) == 1
    assert await audit(server, "?since=2999-01-01T00:00:00Z") == []
    page = await audit(server, "?actor=host&limit=2")
    assert [e["action"] for e in page] == ["audio.end", "audio.remove"]
    rest = await audit(server, f"?actor=host&before_id={page[-1]['id']}")
    assert [e["action"] for e in rest] == ["audio.demote", "audio.mute", "audio.invite"]
    status, _, body = await http(server, "GET", "/v1/admin/audit?limit=x", API_KEY)
    assert status == 400
    for who in (server.token("host", "creator"), server.token("m", "moderator")):
        status, _, body = await http(server, "GET", "/v1/admin/audit", who)
        assert status == 403 and body["errors"][0]["code"] == "forbidden"
    status, _, body = await http(server, "GET", "/v1/admin/audit", server.token("r", "admin"))
    assert status == 200 and len(body["data"]) == 5
    for c in clients.values():
        await c.close()


@pytest.mark.parametrize("backend", ["memory"])
async def test_dlq_replay_from_the_cli_is_audited(settings: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "dlq", "replay"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    storage = Storage(settings)
    await storage.open(migrate=False)
    try:
        (entry,) = await AuditLog(storage).query(action="dlq.replay")
    finally:
        await storage.close()
    assert entry["actor_id"] == "cli" and entry["details"] == {"ids": None, "count": 0}


@pytest.mark.parametrize("backend", ["redis"])
async def test_live_chat_moderation_needs_the_role_and_is_audited_with_reasons(
    server: ServerHandle,
) -> None:
    db = server.node.storage.db
    status, _ = await server.publish(
        {"type": "live.started", "payload": {"live_id": "lv1", "host_id": "host"}}
    )
    assert status == 202

    async def live_known() -> bool:
        return bool(await db.fetchval("SELECT 1 FROM lives WHERE id = 'lv1'"))

    await until(live_known)
    clients = {
        u: await connect(server.url, "/live", server.token(u, r))
        for u, r in (("host", "creator"), ("v1", "user"), ("v2", "user"), ("mod", "moderator"))
    }
    for c in clients.values():
        ok(await c.call("room:join", {"room": "live:lv1"}))
    sent = ok(await clients["v1"].call(
        "chat:send", {"live_id": "lv1", "client_msg_id": "c1", "body": "hello"}
    ))  # fmt: skip
    v2 = clients["v2"]
    for event, data in (
        ("chat:delete", {"live_id": "lv1", "message_id": sent["id"]}),
        ("chat:timeout", {"live_id": "lv1", "user_id": "v1", "seconds": 60}),
        ("chat:ban", {"live_id": "lv1", "user_id": "v1"}),
        ("chat:slowmode", {"live_id": "lv1", "seconds": 5}),
    ):
        assert code(await v2.call(event, data)) == "forbidden", event
    host, mod = clients["host"], clients["mod"]
    ok(await host.call("chat:delete", {"live_id": "lv1", "message_id": sent["id"],
                                        "reason": "off-topic"}))  # fmt: skip
    ok(await host.call("chat:timeout", {"live_id": "lv1", "user_id": "v1", "seconds": 60,
                                         "reason": "flood"}))  # fmt: skip
    ok(await mod.call("chat:ban", {"live_id": "lv1", "user_id": "v2", "reason": "abuse"}))
    rows = [(e["actor_id"], e["action"], e["target"], e["reason"]) for e in await audit(server)]
    assert rows == [
        ("mod", "chat.ban", "user:v2", "abuse"),
        ("host", "chat.timeout", "user:v1", "flood"),
        ("host", "chat.delete", "user:v1", "off-topic"),
    ]
    for c in clients.values():
        await c.close()
