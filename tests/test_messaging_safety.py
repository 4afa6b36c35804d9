"""Blocks, mutes and mentions on /messages (issue 20): a block between two users stops their
direct conversation, tips and mentions both ways and hides typing and presence both ways; a
muted conversation pushes nothing but still counts; an `@mention` in a circle reaches the
mentioned member's inbox and phone, the others get the message only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from messaging.mentions import tokens
from tests import jsclient
from tests.helpers import Client, ServerHandle, connect, err, ok
from tests.test_privacy import http, rows_naming
from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
from tests.test_routing_env import Env, wait_until

NS = "/messages"


def send(cid: str, n: str, body: str) -> dict[str, str]:
    return {"conversation_id": cid, "client_msg_id": n, "body": body}


async def until_received(c: Client, event: str, match: Any, timeout: float = 5) -> None:
    """Wait until `c` has received an `event` that `match`es."""
    n = 1
    while not any(match(x) for x in c.received[event]):
        await c.wait_for(event, n, timeout)
        n = len(c.received[event]) + 1


# -- blocks -----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_js_block_refuses_both_ways_and_unblock_restores(server: ServerHandle) -> None:
    ledger = server.features.ledger.service
    await ledger.grant("admin", "ben", Decimal(20), "grant-ben")
    await ledger.grant("admin", "ana", Decimal(20), "grant-ana")
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(server.url, NS, {"token": server.token("ana")})
        b, _ = await js.connect(server.url, NS, {"token": server.token("ben")})
        cid = (await js.emit(a, "conversation:open", {"user_id": "ben"}))["data"]["id"]
        assert (await js.emit(b, "message:send", send(cid, "b0", "before")))["ok"]
        assert [m["body"] for m in await js.wait(a, "message:new")] == ["before"]

        blocked = await js.emit(a, "user:block", {"user_id": "ben"})
        assert blocked == {"ok": True, "data": {"user_id": "ben", "blocked": True}}
        again = await js.emit(a, "user:block", {"user_id": "ben"})  # idempotent
        assert again == blocked
        listed = (await js.emit(a, "user:blocked", {}))["data"]["blocked"]
        assert [u["user_id"] for u in listed] == ["ben"]
        assert (await js.emit(b, "user:blocked", {}))["data"] == {"blocked": []}

        refused = {
            "open": await js.emit(b, "conversation:open", {"user_id": "ana"}),
            "send": await js.emit(b, "message:send", send(cid, "b1", "are you there?")),
            "tip": await js.emit(
                b, "tip:send", {"conversation_id": cid, "amount": 1, "client_msg_id": "t1"}
            ),
            # the blocker's side of the same conversation delivers nothing either
            "open back": await js.emit(a, "conversation:open", {"user_id": "ben"}),
            "send back": await js.emit(a, "message:send", send(cid, "a1", "go away")),
            "tip back": await js.emit(
                a, "tip:send", {"conversation_id": cid, "amount": 1, "client_msg_id": "t2"}
            ),
            "note back": await js.emit(
                a,
                "message:schedule",
                {
                    "conversation_id": cid,
                    "body": "later",
                    "deliver_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
                },
            ),
        }
        assert {k: r["error"]["code"] for k, r in refused.items()} == dict.fromkeys(
            refused, "forbidden"
        )
        history = (await js.emit(a, "message:history", {"conversation_id": cid}))["data"]
        assert [m["body"] for m in history["messages"]] == ["before"]  # nothing was posted
        assert (await ledger.balance("ana"))["balance"] == 20  # nothing moved
        assert (await ledger.balance("ben"))["balance"] == 20

        unblocked = await js.emit(a, "user:unblock", {"user_id": "ben"})
        assert unblocked == {"ok": True, "data": {"user_id": "ben", "blocked": False}}
        assert (await js.emit(b, "conversation:open", {"user_id": "ana"}))["data"]["id"] == cid
        assert (await js.emit(b, "message:send", send(cid, "b2", "hello again")))["ok"]
        tip = await js.emit(
            b, "tip:send", {"conversation_id": cid, "amount": 2, "client_msg_id": "t3"}
        )
        assert tip["ok"] and tip["data"]["balance"] == 18
        assert (await js.emit(a, "message:send", send(cid, "a2", "welcome back")))["ok"]
        got = await js.wait(a, "message:new", 3)
        # what ana's client received over the whole test: nothing from the blocked time
        assert [m["body"] for m in got] == ["before", "hello again", "tipped 2 HOURS"]
        (back,) = await js.wait(b, "message:new")
        assert back["body"] == "welcome back"


async def test_a_block_either_way_is_a_block_and_only_its_maker_lifts_it(
    server: ServerHandle,
) -> None:
    ana = await connect(server.url, NS, server.token("ana"))
    ben = await connect(server.url, NS, server.token("ben"))
    cid = (await ok(ana, "conversation:open", {"user_id": "ben"}))["id"]
    await ok(ana, "user:block", {"user_id": "ben"})
    await ok(ben, "user:block", {"user_id": "ana"})
    await ok(ana, "user:unblock", {"user_id": "ben"})  # ben's block of ana stays
    assert await err(ana, "message:send", send(cid, "1", "hi")) == "forbidden"
    assert await err(ben, "message:send", send(cid, "2", "hi")) == "forbidden"
    await ok(ana, "user:unblock", {"user_id": "ben"})  # lifting nothing: fine
    # ana cannot lift ben's block: unblocking is of your own
    assert await err(ana, "conversation:open", {"user_id": "ben"}) == "forbidden"
    await ok(ben, "user:unblock", {"user_id": "ana"})
    assert (await ok(ana, "message:send", send(cid, "3", "hi")))["seq"] == 1
    await ana.close()
    await ben.close()


async def test_block_hides_typing_and_presence_both_ways(server: ServerHandle) -> None:
    ana = await connect(server.url, NS, server.token("ana"))
    ben = await connect(server.url, NS, server.token("ben"))
    cy = await connect(server.url, NS, server.token("cy"))
    direct = (await ok(ana, "conversation:open", {"user_id": "ben"}))["id"]
    circle = (await ok(ana, "conversation:create", {"title": "C", "members": ["ben", "cy"]}))["id"]
    p_ana = await connect(server.url, "/presence", server.token("ana"))
    p_ben = await connect(server.url, "/presence", server.token("ben"))
    p_cy = await connect(server.url, "/presence", server.token("cy"))
    # ben watches ana (before the block), cy watches both
    await ok(p_ben, "presence:subscribe", {"user_ids": ["ana", "cy"]})
    await ok(p_cy, "presence:subscribe", {"user_ids": ["ana", "ben"]})
    await ok(p_ana, "presence:subscribe", {"user_ids": ["cy"]})

    await ok(ana, "user:block", {"user_id": "ben"})

    # typing: hidden from the other, both ways, in the circle and in the direct conversation
    await ok(ben, "typing:start", {"conversation_id": circle})
    await ok(ben, "typing:start", {"conversation_id": direct})
    await ok(ana, "typing:start", {"conversation_id": circle})
    await ok(cy, "typing:start", {"conversation_id": circle})  # the sentinel, sent last
    # (a start expires by itself after 5 s: on a slow run cy's expiry may come too)
    seen_by_ana = await ana.wait_for("typing", 1)
    assert {(t["user_id"], t["conversation_id"]) for t in seen_by_ana} == {("cy", circle)}
    seen_by_ben = await ben.wait_for("typing", 1)
    assert {(t["user_id"], t["conversation_id"]) for t in seen_by_ben} == {("cy", circle)}
    seen_by_cy = await cy.wait_for("typing", 2)
    assert {t["user_id"] for t in seen_by_cy} == {"ben", "ana"}

    # presence: each sees the other offline, never seen; cy sees both online
    def status(ack: dict[str, Any]) -> dict[str, Any]:
        return {u["user_id"]: (u["status"], u["last_seen"]) for u in ack["users"]}

    assert status(await ok(p_ben, "presence:query", {"user_ids": ["ana"]})) == {
        "ana": ("offline", None)
    }
    assert status(await ok(p_ana, "presence:query", {"user_ids": ["ben"]})) == {
        "ben": ("offline", None)
    }
    fresh = await ok(p_ana, "presence:subscribe", {"user_ids": ["ben"]})  # while blocked
    assert status(fresh) == {"ben": ("offline", None)}
    cy_sees = status(await ok(p_cy, "presence:query", {"user_ids": ["ana", "ben"]}))
    assert {s for s, _ in cy_sees.values()} == {"online"}
    # changes are not told across the block: ana and ben go invisible, then cy (the sentinel)
    await ok(p_ana, "presence:set", {"invisible": True})
    await ok(p_ben, "presence:set", {"invisible": True})
    await ok(p_cy, "presence:set", {"invisible": True})
    for watcher in (p_ben, p_ana):
        seen = await watcher.wait_for("presence:update", 1)
        assert [u["user_id"] for u in seen] == ["cy"]
    seen = await p_cy.wait_for("presence:update", 2)  # cy, who watches both, was told of both
    assert sorted(u["user_id"] for u in seen) == ["ana", "ben"]

    # unblock: ben's watch of ana (made before the block) and ana's of ben resume
    await ok(ana, "user:unblock", {"user_id": "ben"})
    await ok(p_ana, "presence:set", {"invisible": False})
    await ok(p_ben, "presence:set", {"invisible": False})
    (back,) = [u for u in await p_ben.wait_for("presence:update", 2) if u["user_id"] == "ana"]
    assert back["status"] == "online"
    (back,) = [u for u in await p_ana.wait_for("presence:update", 2) if u["user_id"] == "ben"]
    assert back["status"] == "online"
    assert status(await ok(p_ben, "presence:query", {"user_ids": ["ana"]}))["ana"][0] == "online"
    await ok(ben, "typing:stop", {"conversation_id": direct})
    await until_received(
        ana, "typing", lambda t: (t["user_id"], t["conversation_id"]) == ("ben", direct)
    )
    for c in (ana, ben, cy, p_ana, p_ben, p_cy):
        await c.close()


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("user:block", {}),
        ("user:block", {"user_id": ""}),
        ("user:block", {"user_id": "x" * 65}),
        ("user:block", {"user_id": "u2", "reason": "spam"}),
        ("user:block", {"user_id": 7}),
        ("user:block", {"user_id": "u1"}),  # yourself
        ("user:unblock", {"user_id": "u1"}),
        ("user:unblock", {"user_id": "x" * 65}),
        ("conversation:mute", {"conversation_id": "not-a-uuid"}),
        ("conversation:mute", {"conversation_id": str(uuid.uuid4()), "until": "2030-01-01T00:00"}),
        ("conversation:mute", {"conversation_id": str(uuid.uuid4()), "for": 60}),
        ("conversation:unmute", {"conversation_id": str(uuid.uuid4()), "until": None}),
    ],
)
async def test_bad_block_and_mute_input(server: ServerHandle, event: str, data: Any) -> None:
    c = await connect(server.url, NS, server.token("u1"))
    assert await err(c, event, data) == "bad_request"
    assert (await ok(c, "user:blocked", {}))["blocked"] == []  # nothing was written
    await c.close()


async def test_mute_needs_membership_and_a_future_until(server: ServerHandle) -> None:
    ana = await connect(server.url, NS, server.token("ana"))
    eve = await connect(server.url, NS, server.token("eve"))
    cid = (await ok(ana, "conversation:open", {"user_id": "ben"}))["id"]
    assert await err(eve, "conversation:mute", {"conversation_id": cid}) == "forbidden"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert await err(ana, "conversation:mute", {"conversation_id": cid, "until": past}) == (
        "bad_request"
    )
    soon = datetime.now(UTC) + timedelta(hours=8)
    muted = await ok(ana, "conversation:mute", {"conversation_id": cid, "until": soon.isoformat()})
    assert muted["muted"] is True and datetime.fromisoformat(muted["until"]) == soon
    mutes = server.features.messaging.service.mutes
    assert await mutes.muted_in(cid) == ["ana"]
    assert await mutes.muted_in(cid, soon + timedelta(seconds=1)) == []  # it lapses by itself
    (conv,) = (await ok(ana, "conversation:list"))["conversations"]
    assert conv["muted"] is True
    assert (await ok(ana, "conversation:unmute", {"conversation_id": cid}))["muted"] is False
    (conv,) = (await ok(ana, "conversation:list"))["conversations"]
    assert conv["muted"] is False
    await ana.close()
    await eve.close()


# -- mutes and mentions through the router ----------------------------------------------------


async def sent_event(env: Env, message_id: str, type_: str = "message.sent") -> str:
    """The id of the event messaging published for a message (the in-process bus logs it)."""
    db = env.server.node.storage.db

    async def logged() -> bool:
        return bool(
            await db.fetchval(
                "SELECT id FROM events WHERE type = $1 AND payload->>'message_id' = $2",
                type_,
                message_id,
            )
        )

    await wait_until(logged, what=f"{type_} of {message_id}")
    event_id = str(
        await db.fetchval(
            "SELECT id FROM events WHERE type = $1 AND payload->>'message_id' = $2",
            type_,
            message_id,
        )
    )
    await env.routed(event_id)
    return event_id


async def test_muted_conversation_pushes_nothing_but_counts_unread(env: Env) -> None:
    url, token = env.server.url, env.server.token
    await env.device("bo", "tok-bo")
    ana = await connect(url, NS, token("ana"))
    bo = await connect(url, NS, token("bo"))
    inbox = await connect(url, "/notifications", token("bo"))
    cid = (await ok(ana, "conversation:open", {"user_id": "bo"}))["id"]
    await ok(bo, "conversation:mute", {"conversation_id": cid})

    first = await ok(ana, "message:send", send(cid, "1", "psst"))
    event_id = await sent_event(env, first["id"])
    await env.settle()
    assert env.fcm.to("tok-bo") == []  # no push ...
    log = await env.deliveries(event_id, "bo")
    assert {ch: (r["state"], r["reason"]) for ch, r in log.items()} == {
        "in_app": ("delivered", None),
        "push": ("skipped", "muted"),
        "email": ("skipped", "muted"),
        "sms": ("skipped", "muted"),
        "telegram": ("skipped", "muted"),
    }
    (note,) = await inbox.wait_for("notification:new")  # ... but in-app, and counted
    assert note["kind"] == "message" and "muted" not in note["data"]
    assert (await ok(inbox, "notification:unread")) == {"unread": 1, "mentions": 0}
    (msg,) = await bo.wait_for("message:new")
    assert msg["body"] == "psst"
    (conv,) = (await ok(bo, "conversation:list"))["conversations"]
    assert (conv["unread"], conv["muted"]) == (1, True)

    # unmuted, the next message pushes (so the silence above was the mute)
    await ok(bo, "conversation:unmute", {"conversation_id": cid})
    second = await ok(ana, "message:send", send(cid, "2", "hello?"))
    event_id = await sent_event(env, second["id"])
    await env.settle()
    assert (await env.deliveries(event_id, "bo"))["push"]["state"] == "sent"
    assert len(env.fcm.to("tok-bo")) == 1
    (conv,) = (await ok(bo, "conversation:list"))["conversations"]
    assert (conv["unread"], conv["muted"]) == (2, False)
    for c in (ana, bo, inbox):
        await c.close()


async def test_mention_in_a_circle_of_150_reaches_that_member_only(env: Env) -> None:
    url, token = env.server.url, env.server.token
    members = [f"m{i}" for i in range(149)]
    owner = await connect(url, NS, token("owner"))
    cid = (await ok(owner, "conversation:create", {"title": "Circle", "members": members}))["id"]
    for user in ("m7", "m8", "m9", "m5"):
        await env.device(user, f"tok-{user}")
    m7 = await connect(url, NS, token("m7"))
    m8 = await connect(url, NS, token("m8"))
    m5 = await connect(url, NS, token("m5"))
    inbox7 = await connect(url, "/notifications", token("m7"))
    inbox8 = await connect(url, "/notifications", token("m8"))
    await ok(m7, "conversation:mute", {"conversation_id": cid})  # a mention still pushes
    await ok(m8, "conversation:mute", {"conversation_id": cid})
    await ok(m5, "user:block", {"user_id": "owner"})  # mentions by the blocked reach nobody

    body = "@m7 and @m5, see the notes; cc nobody@example.com, @stranger and @m7."
    sent = await ok(owner, "message:send", send(cid, "hello", body))
    mention_id = await sent_event(env, sent["id"], "message.mentioned")
    message_id = await sent_event(env, sent["id"])
    await env.settle()

    # m7: the mention, in the inbox with its own badge, pushed although m7 muted the circle
    notes = await inbox7.wait_for("notification:new", 2)
    by_kind = {n["kind"]: n for n in notes}
    assert set(by_kind) == {"mention", "message"}
    assert by_kind["mention"]["body"] == "owner mentioned you"
    assert by_kind["mention"]["data"]["conversation_id"] == cid
    assert await ok(inbox7, "notification:unread") == {"unread": 2, "mentions": 1}
    assert [m["notification"]["body"] for m in env.fcm.to("tok-m7")] == ["owner mentioned you"]
    assert (await env.deliveries(message_id, "m7"))["push"]["reason"] == "muted"
    assert (await env.deliveries(mention_id, "m7"))["push"]["state"] == "sent"
    # everyone else: the message only (m9 pushed, m8 muted: in-app), no mention anywhere
    assert await env.deliveries(mention_id, "m5") == {} and env.fcm.to("tok-m5") != []
    assert [m["notification"]["body"] for m in env.fcm.to("tok-m9")] == ["owner sent you a message"]
    assert env.fcm.to("tok-m8") == []
    (only,) = await inbox8.wait_for("notification:new")
    assert only["kind"] == "message"
    assert await ok(inbox8, "notification:unread") == {"unread": 1, "mentions": 0}
    db = env.server.node.storage.db
    kinds = await db.fetch(
        "SELECT kind, count(*) AS n FROM notifications GROUP BY kind ORDER BY kind"
    )
    assert {r["kind"]: r["n"] for r in kinds} == {"mention": 1, "message": 149}
    (msg,) = await m8.wait_for("message:new")
    assert msg["body"] == body
    for c in (owner, m7, m8, m5, inbox7, inbox8):
        await c.close()


def test_mention_tokens() -> None:
    assert tokens("@ana, @bo. and @cy: hi @d-1") == ["ana", "bo.", "bo", "cy:", "cy", "d-1"]
    assert tokens("mail me@example.com or @@x") == []
    assert tokens(None) == []
    assert tokens("@ana @ana") == ["ana"]


# -- a user's data ------------------------------------------------------------------------------


async def test_blocks_and_mutes_are_exported_and_erased_both_ways(server: ServerHandle) -> None:
    tag = uuid.uuid4().hex[:8]
    uid, pal, foe = f"gone-{tag}", f"pal-{tag}", f"foe-{tag}"
    me = await connect(server.url, NS, server.token(uid))
    other = await connect(server.url, NS, server.token(foe))
    cid = (await ok(me, "conversation:open", {"user_id": pal}))["id"]
    await ok(me, "conversation:mute", {"conversation_id": cid})
    await ok(me, "user:block", {"user_id": pal})
    await ok(other, "user:block", {"user_id": uid})

    status, _, body = await http(server, "GET", "/v1/me/export", server.token(uid))
    assert status == 200, body
    archive = body["data"]
    assert [b["user_id"] for b in archive["blocks"]["blocked"]] == [pal]
    assert [b["user_id"] for b in archive["blocks"]["blocked_by"]] == [foe]
    assert [(m["conversation_id"], m["until"]) for m in archive["mutes"]] == [(cid, None)]

    db = server.node.storage.db
    mine = {"user_blocks.blocker_id", "user_blocks.blocked_id", "conversation_mutes.user_id"}
    assert mine <= set(await rows_naming(db, uid))
    status, _, body = await http(server, "DELETE", "/v1/me", server.token(uid), {"reason": "x"})
    assert status == 200, body
    assert body["data"]["rows"]["user_blocks"] == 2
    assert body["data"]["rows"]["conversation_mutes"] == 1
    assert await db.fetchval("SELECT count(*) FROM user_blocks") == 0
    left = await rows_naming(db, uid)
    assert not [c for c in left if c.startswith(("user_blocks.", "conversation_mutes."))], left
    assert (await ok(other, "user:blocked", {}))["blocked"] == []
    await other.close()
