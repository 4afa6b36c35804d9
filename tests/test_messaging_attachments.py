"""Attachments of messages on /messages, through the real code path against the fake Cloudflare
(tests/fakes/cloudflare.py): an upload URL from Images (images) or Stream (voice, video), the
file sent to it, a message carrying it, signed URLs for members checked the way Cloudflare's
edge checks them, `forbidden` for everyone else; bad input refused with clear messages; the
object deleted at the provider with its message and with its uploader, even when the provider
fails first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from config import Settings
from messaging.attachments import PURGE_JOB, UNUSED_JOB
from server import jsonutil
from tests import jsclient
from tests.conftest import free_port
from tests.fakes.cloudflare import FakeCloudflare
from tests.helpers import Client, ServerHandle, connect, ok

NS = "/messages"
IMAGES_KEY = "images-url-signing-key-0123456789"
IMAGES_HASH = "Vi7wi5KSItxGFsWRG2Us6Q"

#: the logic is the same on both buses; the round trip runs on both, the rest in-process
MEMORY = pytest.mark.parametrize("backend", ["memory"])


@pytest.fixture
async def cf() -> AsyncIterator[FakeCloudflare]:
    fake = FakeCloudflare()
    await fake.start(free_port())
    yield fake
    await fake.stop()


@pytest.fixture
async def settings(settings: Settings, cf: FakeCloudflare) -> Settings:
    settings.cloudflare_account_id = cf.account_id
    settings.cloudflare_api_token = cf.api_token
    settings.cloudflare_base_url = cf.base_url
    settings.cloudflare_webhook_secret = cf.webhook_secret
    settings.cloudflare_signing_key_id, settings.cloudflare_signing_key_pem = (
        cf.create_signing_key()
    )
    settings.cloudflare_images_account_hash = IMAGES_HASH
    settings.cloudflare_images_signing_key = IMAGES_KEY
    return settings


async def err(c: Client, event: str, data: Any) -> tuple[str, str]:
    ack = await c.call(event, data)
    assert ack["ok"] is False, ack
    error = ack["error"]
    details = error.get("details") or []
    text = " ".join([error["message"], *(f"{d['field']}: {d['message']}" for d in details)])
    return str(error["code"]), text


async def until(cond: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def upload_file(url: str, content: bytes = b"\x89PNG...") -> int:
    """What a client does with the upload URL: one multipart POST, field `file`."""
    form = aiohttp.FormData()
    form.add_field("file", content, filename="f", content_type="application/octet-stream")
    async with aiohttp.ClientSession() as s, s.post(url, data=form) as r:
        return r.status


async def http(
    server: ServerHandle, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = jsonutil.dumpb(body) if body is not None else None
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.url + path, data=data, headers=headers) as r,
    ):
        return r.status, await r.json()


def image(cid: str, **over: Any) -> dict[str, Any]:
    return {
        "conversation_id": cid,
        "kind": "image",
        "content_type": "image/jpeg",
        "size_bytes": 120_000,
        "name": "beach.jpg",
        **over,
    }


async def trio(server: ServerHandle) -> tuple[Client, Client, Client, str]:
    alice = await connect(server.url, NS, server.token("alice"))
    bob = await connect(server.url, NS, server.token("bob"))
    eve = await connect(server.url, NS, server.token("eve"))
    conv = await ok(alice, "conversation:open", {"user_id": "bob"})
    return alice, bob, eve, conv["id"]


async def test_image_round_trip_members_get_a_signed_url(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    alice, bob, eve, cid = await trio(server)
    created = await ok(alice, "attachment:create", image(cid))
    att = created["attachment_id"]
    assert created["kind"] == "image" and created["max_size_bytes"] == 10 * 1024 * 1024
    (image_id,) = cf.images
    assert created["upload_url"] == f"{cf.url}/image-upload/{image_id}"
    sent = cf.requests[-1]
    assert sent[1] == "images/direct_upload"
    assert sent[2]["requireSignedURLs"] == "true" and sent[2]["creator"] == "alice"
    row = await server.node.storage.db.fetchrow(
        "SELECT * FROM message_attachments WHERE id = $1", att
    )
    assert row["provider_uid"] == image_id and row["uploader_id"] == "alice"
    assert row["state"] == "pending" and b"beach.jpg" not in row["name"]  # sealed

    # not sent yet: its uploader sees it (still a draft at Images), the other member does not
    early = await ok(alice, "attachment:url", {"attachment_id": att})
    assert early == {
        "attachment_id": att,
        "kind": "image",
        "state": "pending",
        "url": None,
        "expires_at": None,
    }
    assert (await err(bob, "attachment:url", {"attachment_id": att}))[0] == "forbidden"

    assert await upload_file(created["upload_url"]) == 200
    posted = await ok(
        alice,
        "message:send",
        {"conversation_id": cid, "client_msg_id": "p1", "attachments": [att]},
    )
    (msg,) = await bob.wait_for("message:new")
    assert msg["id"] == posted["id"] and msg["body"] == ""
    assert msg["attachments"] == [
        {
            "id": att,
            "kind": "image",
            "content_type": "image/jpeg",
            "size_bytes": 120_000,
            "name": "beach.jpg",
            "state": "pending",
        }
    ]

    (listed,) = (await ok(bob, "conversation:list"))["conversations"]
    last = listed["last_message"]
    assert last["id"] == posted["id"] and last["body"] == "" and last["attachments"] == ["image"]

    got = await ok(bob, "attachment:url", {"attachment_id": att, "ttl": 600})
    assert got["state"] == "ready" and got["kind"] == "image"
    for c in (alice, bob):  # found ready: the conversation is told
        (updated,) = await c.wait_for("attachment:updated")
        assert updated == {
            "attachment_id": att,
            "conversation_id": cid,
            "message_id": posted["id"],
            "state": "ready",
        }
    claims = cf.check_image_url(got["url"], IMAGES_KEY)  # what Images' edge verifies
    assert claims["id"] == image_id and claims["hash"] == IMAGES_HASH
    assert 0 < claims["exp"] - time.time() <= 600
    assert got["url"].startswith(f"https://imagedelivery.net/{IMAGES_HASH}/{image_id}/public?")
    forged = got["url"].replace(image_id, "0" * len(image_id))
    with pytest.raises(PermissionError):
        cf.check_image_url(forged, IMAGES_KEY)
    with pytest.raises(PermissionError):
        cf.check_image_url(got["url"], "another-key")

    code, text = await err(eve, "attachment:url", {"attachment_id": att})
    assert code == "forbidden" and "can see" in text
    assert (await err(eve, "attachment:create", image(cid)))[0] == "forbidden"

    page = await ok(bob, "message:history", {"conversation_id": cid})
    assert page["messages"][0]["attachments"][0]["state"] == "ready"
    export = await http(server, "GET", "/v1/me/export", server.token("alice"))
    assert export[0] == 200
    (listed,) = export[1]["data"]["attachments"]
    assert listed["id"] == att and listed["message_id"] == posted["id"]
    assert listed["name"] == "beach.jpg" and listed["kind"] == "image"
    for c in (alice, bob, eve):
        await c.close()


@MEMORY
async def test_voice_note_ready_by_stream_webhook(server: ServerHandle, cf: FakeCloudflare) -> None:
    alice, bob, eve, cid = await trio(server)
    created = await ok(
        alice,
        "attachment:create",
        {"conversation_id": cid, "kind": "voice", "content_type": "audio/mp4", "size_bytes": 9000},
    )
    att, uid = created["attachment_id"], created["upload_url"].rsplit("/", 1)[1]
    assert created["max_duration_s"] == 300
    body = cf.requests[-1][2]
    assert body["requireSignedURLs"] is True and body["maxDurationSeconds"] == 300
    assert body["creator"] == "alice" and uid in cf.videos
    assert await upload_file(created["upload_url"], b"m4a") == 200
    await ok(
        alice,
        "message:send",
        {"conversation_id": cid, "client_msg_id": "v1", "body": "listen", "attachments": [att]},
    )
    # uploaded, still encoding: said so, no URL
    waiting = await ok(bob, "attachment:url", {"attachment_id": att})
    assert waiting["state"] == "pending" and waiting["url"] is None

    ready = jsonutil.dumpb(cf.ready_video(uid))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            server.url + "/v1/webhooks/cloudflare",
            data=ready,
            headers={"Webhook-Signature": cf.signature(ready), "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["data"]["outcome"] == "attachment"
    db = server.node.storage.db
    # an attachment is not content: no media row, no content.created
    assert await db.fetchval("SELECT count(*) FROM media") == 0
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'content.created'") == 0
    assert await db.fetchval("SELECT state FROM message_attachments WHERE id = $1", att) == "ready"
    (updated,) = await bob.wait_for("attachment:updated")
    assert updated["attachment_id"] == att and updated["state"] == "ready"

    got = await ok(bob, "attachment:url", {"attachment_id": att, "ttl": 120})
    assert got["state"] == "ready" and uid not in got["url"]
    claims = cf.check_playback(got["url"])  # what Stream's edge verifies
    assert claims["sub"] == uid and claims["kid"] == server.settings.cloudflare_signing_key_id
    assert 0 < claims["exp"] - time.time() <= 120
    assert got["url"].endswith("/manifest/video.m3u8")
    assert (await err(eve, "attachment:url", {"attachment_id": att}))[0] == "forbidden"
    for c in (alice, bob, eve):
        await c.close()


@MEMORY
async def test_bad_input_is_refused_clearly(server: ServerHandle, cf: FakeCloudflare) -> None:
    alice, bob, eve, cid = await trio(server)
    other = (await ok(alice, "conversation:open", {"user_id": "carol"}))["id"]

    cases = [
        (image(cid, kind="pdf"), "bad_request", "kind"),
        (image(cid, content_type="image/svg+xml"), "bad_request", "image/svg+xml"),
        (image(cid, kind="video"), "bad_request", "video attachment is one of"),
        (image(cid, size_bytes=11 * 1024 * 1024), "bad_request", "at most 10 MB"),
        (
            image(cid, kind="video", content_type="video/mp4", size_bytes=101 * 2**20),
            "bad_request",
            "100 MB",
        ),
        (image(cid, size_bytes=0), "bad_request", "size_bytes"),
        (image(cid, zz=1), "bad_request", "zz"),
    ]
    for payload, code, words in cases:
        got = await err(alice, "attachment:create", payload)
        assert got[0] == code and words in got[1], (payload, got)
    assert cf.images == {} and cf.videos == {}  # nothing asked of Cloudflare

    mine = (await ok(alice, "attachment:create", image(cid)))["attachment_id"]
    bobs = (await ok(bob, "attachment:create", image(cid)))["attachment_id"]
    elsewhere = (await ok(alice, "attachment:create", image(other)))["attachment_id"]

    def send(cmid: str, atts: list[str], body: str = "") -> dict[str, Any]:
        return {"conversation_id": cid, "client_msg_id": cmid, "body": body, "attachments": atts}

    code, text = await err(alice, "message:send", send("e1", []))
    assert code == "bad_request" and "a body, attachments, or both" in text
    code, text = await err(alice, "message:send", send("e2", [bobs]))
    assert code == "forbidden" and "not one you created in this conversation" in text
    code, text = await err(alice, "message:send", send("e3", [elsewhere]))
    assert code == "forbidden" and elsewhere in text
    code, text = await err(
        alice, "message:send", send("e4", ["00000000-0000-4000-8000-000000000000"])
    )
    assert code == "forbidden"
    code, text = await err(alice, "message:send", send("e5", [mine, mine]))
    assert code == "bad_request" and "named twice" in text
    code, _ = await err(alice, "message:send", send("e6", [mine] * 5))
    assert code == "bad_request"
    code, _ = await err(eve, "message:send", send("e7", [mine]))
    assert code == "forbidden"
    # a refused send binds nothing: the attachment is still free
    await ok(alice, "message:send", send("ok1", [mine], "first"))
    code, text = await err(alice, "message:send", send("e8", [mine], "again"))
    assert code == "bad_request" and "already in another message" in text
    # a retry of the same send is the same message, not a reuse
    again = await ok(alice, "message:send", send("ok1", [mine], "first"))
    assert again["duplicate"] is True
    db = server.node.storage.db
    assert await db.fetchval("SELECT count(*) FROM messages") == 1
    for c in (alice, bob, eve):
        await c.close()


@MEMORY
async def test_delete_and_erasure_delete_at_the_provider(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    alice, bob, eve, cid = await trio(server)
    db = server.node.storage.db
    pic = await ok(alice, "attachment:create", image(cid))
    clip = await ok(
        alice,
        "attachment:create",
        {"conversation_id": cid, "kind": "video", "content_type": "video/mp4", "size_bytes": 5000},
    )
    image_id = pic["upload_url"].rsplit("/", 1)[1]
    video_uid = clip["upload_url"].rsplit("/", 1)[1]
    for created in (pic, clip):
        assert await upload_file(created["upload_url"]) == 200
    msg = await ok(
        alice,
        "message:send",
        {
            "conversation_id": cid,
            "client_msg_id": "d1",
            "body": "two things",
            "attachments": [pic["attachment_id"], clip["attachment_id"]],
        },
    )
    (seen,) = await bob.wait_for("message:new")
    assert [a["kind"] for a in seen["attachments"]] == ["image", "video"]

    # the provider fails the first delete: the job is retried, the intent is not lost
    cf.fail_next(500)
    await ok(alice, "message:delete", {"conversation_id": cid, "message_id": msg["id"]})
    assert await db.fetchval("SELECT count(*) FROM message_attachments") == 0
    jobs = await db.fetch("SELECT payload FROM jobs WHERE kind = $1", PURGE_JOB)
    assert sorted(j["payload"]["uid"] for j in jobs) == sorted([image_id, video_uid])

    async def both_deleted() -> bool:
        return set(cf.deleted) == {("images", image_id), ("stream", video_uid)}

    await until(both_deleted)
    assert image_id not in cf.images and video_uid not in cf.videos
    attempts = await db.fetch("SELECT attempts, last_error FROM jobs WHERE kind = $1", PURGE_JOB)
    assert sorted(a["attempts"] for a in attempts) == [1, 2]  # one failed, was retried
    assert any("Cloudflare" in (a["last_error"] or "") for a in attempts)
    page = await ok(bob, "message:history", {"conversation_id": cid})
    assert "attachments" not in page["messages"][0] and page["messages"][0]["deleted"]

    # erasure: bob's attachment goes (rows and provider object), alice's stays
    bob_voice = await ok(
        bob,
        "attachment:create",
        {"conversation_id": cid, "kind": "voice", "content_type": "audio/ogg", "size_bytes": 800},
    )
    bob_uid = bob_voice["upload_url"].rsplit("/", 1)[1]
    await ok(
        bob,
        "message:send",
        {
            "conversation_id": cid,
            "client_msg_id": "b1",
            "attachments": [bob_voice["attachment_id"]],
        },
    )
    kept = await ok(
        alice, "attachment:create", image(cid, name="kept.png", content_type="image/png")
    )
    status, body = await http(server, "DELETE", "/v1/me", server.token("bob"), {"reason": "bye"})
    assert status == 200, body
    assert body["data"]["rows"]["message_attachments"] == 1

    async def bob_deleted() -> bool:
        return ("stream", bob_uid) in cf.deleted

    await until(bob_deleted)
    left = await db.fetch("SELECT id, uploader_id FROM message_attachments")
    assert [(str(r["id"]), r["uploader_id"]) for r in left] == [(kept["attachment_id"], "alice")]
    assert (
        await db.fetchval("SELECT count(*) FROM message_attachments WHERE uploader_id = 'bob'") == 0
    )
    for c in (alice, eve):
        await c.close()


@MEMORY
async def test_without_images_settings_images_say_what_to_set(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    server.settings.cloudflare_images_signing_key = None
    alice = await connect(server.url, NS, server.token("alice"))
    cid = (await ok(alice, "conversation:open", {"user_id": "bob"}))["id"]
    code, text = await err(alice, "attachment:create", image(cid))
    assert code == "unavailable" and "OURS_CLOUDFLARE_IMAGES_SIGNING_KEY" in text
    assert cf.images == {}
    await alice.close()


@MEMORY
async def test_an_attachment_never_sent_is_deleted_after_a_day(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    alice = await connect(server.url, NS, server.token("alice"))
    cid = (await ok(alice, "conversation:open", {"user_id": "bob"}))["id"]
    unused = await ok(alice, "attachment:create", image(cid))
    sent = await ok(alice, "attachment:create", image(cid, name="sent.jpg"))
    await ok(
        alice,
        "message:send",
        {"conversation_id": cid, "client_msg_id": "s1", "attachments": [sent["attachment_id"]]},
    )
    db = server.node.storage.db
    jobs = await db.fetch("SELECT run_at, created_at FROM jobs WHERE kind = $1", UNUSED_JOB)
    assert len(jobs) == 2
    assert all(
        23 * 3600 < (j["run_at"] - j["created_at"]).total_seconds() <= 24 * 3600 for j in jobs
    )
    await db.execute("UPDATE jobs SET run_at = now() WHERE kind = $1", UNUSED_JOB)
    unused_id = unused["upload_url"].rsplit("/", 1)[1]

    async def gone() -> bool:
        done = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = $1 AND state = 'done'", UNUSED_JOB
        )
        return done == 2 and ("images", unused_id) in cf.deleted

    await until(gone)
    left = await db.fetch("SELECT id FROM message_attachments")
    assert [str(r["id"]) for r in left] == [sent["attachment_id"]]
    assert len(cf.deleted) == 1
    await alice.close()


@MEMORY
async def test_http_route_and_late_circle_members(server: ServerHandle, cf: FakeCloudflare) -> None:
    """GET /v1/attachments/{id} answers as attachment:url does; a member who joined a circle
    after the message cannot see its attachment (history starts when they joined)."""
    alice = await connect(server.url, NS, server.token("alice"))
    bob = await connect(server.url, NS, server.token("bob"))
    circle = await ok(alice, "conversation:create", {"title": "trip", "members": ["bob"]})
    cid = circle["id"]
    created = await ok(alice, "attachment:create", image(cid))
    att = created["attachment_id"]
    assert await upload_file(created["upload_url"]) == 200
    await ok(
        alice,
        "message:send",
        {"conversation_id": cid, "client_msg_id": "c1", "attachments": [att]},
    )
    await ok(alice, "conversation:add", {"conversation_id": cid, "user_id": "carol"})
    carol = await connect(server.url, NS, server.token("carol"))
    code, _ = await err(carol, "attachment:url", {"attachment_id": att})
    assert code == "forbidden"

    path = f"/v1/attachments/{att}?ttl=300"
    status, body = await http(server, "GET", path, server.token("bob"))
    assert status == 200, body
    data = body["data"]
    assert data["state"] == "ready" and data["attachment_id"] == att
    claims = cf.check_image_url(data["url"], IMAGES_KEY)
    assert 0 < claims["exp"] - time.time() <= 300
    for who in ("carol", "eve"):
        status, body = await http(server, "GET", path, server.token(who))
        assert status == 403 and body["errors"][0]["code"] == "forbidden", who
    assert (await http(server, "GET", path, None))[0] == 401
    status, _ = await http(server, "GET", "/v1/attachments/not-a-uuid", server.token("bob"))
    assert status == 400
    for c in (alice, bob, carol):
        await c.close()


@MEMORY
@pytest.mark.skipif(not jsclient.available(), reason="run `npm ci` in tests/e2e")
async def test_official_js_clients_send_and_open_a_video(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    async with jsclient.JsClients() as js:
        a, _ = await js.connect(server.url, NS, {"token": server.token("ana")})
        b, _ = await js.connect(server.url, NS, {"token": server.token("ben")})
        c, _ = await js.connect(server.url, NS, {"token": server.token("cy")})
        cid = (await js.emit(a, "conversation:open", {"user_id": "ben"}))["data"]["id"]
        ack = await js.emit(
            a,
            "attachment:create",
            {"conversation_id": cid, "kind": "video", "content_type": "video/mp4", "size_bytes": 7},
        )
        assert ack["ok"], ack
        created = ack["data"]
        uid = created["upload_url"].rsplit("/", 1)[1]
        assert await upload_file(created["upload_url"], b"mp4") == 200
        ack = await js.emit(
            a,
            "message:send",
            {
                "conversation_id": cid,
                "client_msg_id": "js1",
                "body": "look",
                "attachments": [created["attachment_id"]],
            },
        )
        assert ack["ok"], ack
        (msg,) = await js.wait(b, "message:new")
        assert [x["id"] for x in msg["attachments"]] == [created["attachment_id"]]
        cf.ready_video(uid)  # encoded; no webhook: the URL request looks the state up
        ack = await js.emit(b, "attachment:url", {"attachment_id": created["attachment_id"]})
        assert ack["ok"] and ack["data"]["state"] == "ready", ack
        assert cf.check_playback(ack["data"]["url"])["sub"] == uid
        ack = await js.emit(c, "attachment:url", {"attachment_id": created["attachment_id"]})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
