"""Activity streams on /feed (seed 000): opt-in, the similarity key, "only one" / "N others",
match notifications through the router (at most 3 a day) and removal after 24 hours. Real
python-socketio clients, real PostgreSQL, both bus backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from activity.feature import ActivityFeature
from activity.service import PURGE_JOB
from activity.similarity import label, similarity_key, words
from server.clock import ManualClock
from tests.helpers import Client, ServerHandle, connect


def ok(ack: dict[str, Any]) -> Any:
    assert ack["ok"] is True, ack
    return ack["data"]


def refused(ack: dict[str, Any], code: str) -> str:
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    return str(ack["error"]["message"])


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def feature(server: ServerHandle) -> ActivityFeature:
    f = server.features.activity
    assert isinstance(f, ActivityFeature)
    return f


async def feed(server: ServerHandle, user: str, *, optin: bool = True) -> Client:
    c = await connect(server.url, "/feed", server.token(user))
    if optin:
        assert ok(await c.call("activity:optin", {"enabled": True}))["enabled"] is True
    return c


# -- the similarity key ---------------------------------------------------------------------


def test_similarity_groups_what_people_write_differently() -> None:
    lover = similarity_key("Listening to Taylor Swift's Lover", "listening")
    assert similarity_key("listening to LOVER by taylor swift!!", "listening") == lover
    assert similarity_key("Lover \u2014 Taylor Swift", "listening") == lover
    assert similarity_key("Taylor Swift\u2019s  lover ", "listening") == lover
    # another kind is another thing; another song is another thing
    assert similarity_key("Lover by Taylor Swift", "watching") != lover
    assert similarity_key("Listening to Taylor Swift's Karma", "listening") != lover
    # stems, accents, plural
    assert words("Watching Stranger Things", "watching") == ["stranger", "thing"]
    assert similarity_key("stranger thing", "watching") == similarity_key(
        "Watching Stranger Things", "watching"
    )
    assert similarity_key("Beyonc\u00e9 - Halo", "listening") == similarity_key(
        "beyonce halo", "listening"
    )
    assert similarity_key("running", "doing") == similarity_key("I run", "doing")
    # only stop words still make a key of their own; no words at all make none
    assert words("I am", "doing") == ["am", "i"]
    with pytest.raises(ValueError):
        similarity_key("?!", "doing")
    assert [label(n) for n in (0, 1, 2, 41)] == ["only one", "1 other", "2 others", "41 others"]


# -- the stream -----------------------------------------------------------------------------


async def test_two_share_the_same_thing_the_second_learns_1_other_and_after_24h_it_is_gone(
    server: ServerHandle,
) -> None:
    db = server.node.storage.db
    a, b, c = await feed(server, "ann"), await feed(server, "bob"), await feed(server, "cyd")
    ann_inbox = await connect(server.url, "/notifications", server.token("ann"))
    cyd_inbox = await connect(server.url, "/notifications", server.token("cyd"))
    ok(await c.call("activity:share", {"text": "Reading Dune", "kind": "reading"}))

    first = ok(
        await a.call(
            "activity:share", {"text": "Listening to Taylor Swift's Lover", "kind": "listening"}
        )
    )
    assert (first["similar"], first["label"]) == (0, "only one")
    second = ok(
        await b.call(
            "activity:share", {"text": "listening to LOVER by taylor swift!", "kind": "listening"}
        )
    )
    assert (second["similar"], second["label"]) == (1, "1 other")
    expires = datetime.fromisoformat(second["expires_at"])
    assert expires - datetime.fromisoformat(second["created_at"]) == timedelta(hours=24)

    # ann opted in (match notifications on by default with the opt-in) and shares the same
    # thing: the router tells her, anonymously, quoting her own words
    (note,) = await ann_inbox.wait_for("notification:new")
    assert note["kind"] == "match" and note["actors"] == []
    assert "Taylor Swift's Lover" in note["body"] and "bob" not in str(note)
    assert cyd_inbox.received["notification:new"] == []

    # 24 hours later: invisible at once, and the purge job really deletes the rows
    f = feature(server)
    later = datetime.now(UTC) + timedelta(hours=24, seconds=1)
    f.clock = ManualClock(later)
    again = ok(await c.call("activity:share", {"text": "Lover, Taylor Swift", "kind": "listening"}))
    assert (again["similar"], again["label"]) == (0, "only one")
    status = ok(await a.call("activity:status", {}))
    assert status["enabled"] is True and status["entries"] == []
    assert (
        await db.fetchval("SELECT count(*) FROM activity_entries WHERE user_id IN ('ann', 'bob')")
        == 2
    )  # still stored until the purge runs
    job = await db.fetchrow("SELECT key FROM jobs WHERE kind = $1 AND state = 'pending'", PURGE_JOB)
    assert job is not None  # the purge is a durable job; make it due now
    await db.execute("UPDATE jobs SET run_at = now() WHERE key = $1", job["key"])

    async def purged() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM activity_entries WHERE user_id IN ('ann', 'bob', 'cyd')"
        )
        return bool(n == 1)  # only cyd's share made "24 hours later"

    await until(purged)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'pending'", PURGE_JOB
        )
        == 1
    )  # and it scheduled its next run
    for client in (a, b, c, ann_inbox, cyd_inbox):
        await client.close()


async def test_match_notifications_are_opt_in_and_at_most_3_a_day(server: ServerHandle) -> None:
    db = server.node.storage.db
    ann = await feed(server, "ann")
    quiet = await feed(server, "quiet")
    ok(await quiet.call("activity:optin", {"enabled": True, "matches": False}))
    ok(await ann.call("activity:share", {"text": "Playing chess", "kind": "playing"}))
    ok(await quiet.call("activity:share", {"text": "playing Chess!", "kind": "playing"}))
    others = [await feed(server, f"p{i}") for i in range(4)]
    for i, other in enumerate(others):
        shared = ok(await other.call("activity:share", {"text": "chess", "kind": "playing"}))
        assert shared["label"] == f"{i + 2} others"

    async def all_routed() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM notification_events WHERE user_id = 'ann' AND kind = 'match'"
        )
        return bool(n == 5)  # quiet's share and the four others'

    await until(all_routed)
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            server.url + "/v1/me/notifications",
            headers={"Authorization": f"Bearer {server.token('ann')}"},
        ) as r,
    ):
        items = (await r.json())["data"]["items"]
    assert [i["kind"] for i in items] == ["match"] * 3  # the router's daily cap
    capped = await db.fetchval(
        "SELECT count(DISTINCT event_id) FROM delivery_skips"  # skipped ones: compact rows
        " WHERE user_ids @> ARRAY['ann'] AND skips->'in_app'->>0 = 'cap'"
    )
    assert capped == 2
    # quiet opted in to the stream but not to match notifications: nothing visible
    assert (
        await db.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = 'quiet' AND NOT hidden"
        )
        == 0
    )
    for client in (ann, quiet, *others):
        await client.close()


async def test_opt_in_is_required_and_opting_out_deletes_everything(server: ServerHandle) -> None:
    db = server.node.storage.db
    c = await feed(server, "dee", optin=False)
    message = refused(
        await c.call("activity:share", {"text": "Cooking", "kind": "doing"}), "forbidden"
    )
    assert "opt-in" in message and "activity:optin" in message
    refused(await c.call("activity:share", {"text": "x", "kind": "sleeping"}), "bad_request")
    ok(await c.call("activity:optin", {"enabled": True}))
    refused(await c.call("activity:share", {"text": "x" * 281}), "bad_request")
    refused(await c.call("activity:share", {"text": "?!"}), "bad_request")
    refused(await c.call("activity:share", {"text": "a", "user_id": "eve"}), "bad_request")
    one = ok(await c.call("activity:share", {"text": "Cooking pasta", "kind": "doing"}))
    ok(await c.call("activity:share", {"text": "Reading Dune", "kind": "reading"}))
    status = ok(await c.call("activity:status", {}))
    assert [e["text"] for e in status["entries"]] == ["Reading Dune", "Cooking pasta"]
    assert status["matches"] is True
    assert ok(await c.call("activity:delete", {"id": one["id"]}))["deleted"] is True
    refused(await c.call("activity:delete", {"id": one["id"]}), "not_found")

    off = ok(await c.call("activity:optin", {"enabled": False}))
    assert off == {"enabled": False, "matches": False, "removed": 1}
    assert await db.fetchval("SELECT count(*) FROM activity_entries WHERE user_id = 'dee'") == 0
    assert await db.fetchval("SELECT count(*) FROM activity_optins WHERE user_id = 'dee'") == 0
    refused(await c.call("activity:share", {"text": "Cooking", "kind": "doing"}), "forbidden")
    await c.close()
