"""Video on Cloudflare Stream: uploads and live inputs through the real HTTP calls against a fake
Stream API (tests/fakes/cloudflare.py); signed webhooks becoming events once; signed playback
tokens checked the way Stream's edge checks them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config import Settings
from media.video import live_key_aad
from server import jsonutil
from tests.conftest import API_KEY, PgCluster, free_port, make_settings
from tests.fakes.cloudflare import FakeCloudflare
from tests.helpers import ServerHandle, connect, start_server

NOTIFY_SECRET = "notification-destination-secret"


@pytest.fixture
async def cf() -> AsyncIterator[FakeCloudflare]:
    fake = FakeCloudflare()
    await fake.start(free_port())
    yield fake
    await fake.stop()


@pytest.fixture
async def settings(settings: Settings, cf: FakeCloudflare) -> Settings:
    """The conftest settings (per bus backend) pointed at the fake Stream API."""
    settings.cloudflare_account_id = cf.account_id
    settings.cloudflare_api_token = cf.api_token
    settings.cloudflare_base_url = cf.base_url
    settings.cloudflare_webhook_secret = cf.webhook_secret
    settings.cloudflare_notification_secret = NOTIFY_SECRET
    settings.cloudflare_signing_key_id, settings.cloudflare_signing_key_pem = (
        cf.create_signing_key()
    )
    return settings


async def http(
    server: ServerHandle,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (jsonutil.dumpb(body) if body is not None else None)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.url + path, data=data, headers=hdrs) as r,
    ):
        return r.status, await r.json()


async def webhook(
    server: ServerHandle, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    return await http(server, "POST", "/v1/webhooks/cloudflare", raw=body, headers=headers)


async def until(cond: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def upload(server: ServerHandle, user: str = "cr", **body: Any) -> dict[str, Any]:
    status, resp = await http(
        server, "POST", "/v1/media/uploads", token=server.token(user, "creator"), body=body
    )
    assert status == 201, resp
    return dict(resp["data"])


# -- uploads --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory"])
async def test_creator_gets_basic_or_tus_upload(server: ServerHandle, cf: FakeCloudflare) -> None:
    data = await upload(server, title="My clip", zone="music", max_duration_s=600)
    assert data["protocol"] == "basic"
    assert data["upload_url"] == f"{cf.url}/upload/{data['uid']}"
    sent = cf.requests[-1][2]
    assert sent["creator"] == "cr" and sent["maxDurationSeconds"] == 600
    assert sent["meta"] == {"name": "My clip", "kind": "video"}
    async with aiohttp.ClientSession() as s, s.post(data["upload_url"], data=b"mp4") as r:
        assert r.status == 200  # the one-time URL takes the file
    row = await server.node.storage.db.fetchrow("SELECT * FROM media WHERE uid = $1", data["uid"])
    assert row["creator_id"] == "cr" and row["state"] == "pending" and row["zone"] == "music"

    big = await upload(server, title="Long", size_bytes=2 * 1024**3, require_signed_urls=True)
    assert big["protocol"] == "tus"
    assert big["upload_url"].startswith(f"{cf.url}/tus/{big['uid']}")
    tus = cf.requests[-1][2]
    assert tus["length"] == 2 * 1024**3
    assert tus["metadata"]["maxdurationseconds"] == "3600"
    assert tus["metadata"]["name"] == "Long" and "requiresignedurls" in tus["metadata"]
    assert cf.videos[big["uid"]]["creator"] == "cr"

    # who may, and what is refused
    status, resp = await http(
        server, "POST", "/v1/media/uploads", token=server.token("fan"), body={}
    )
    assert status == 403 and resp["errors"][0]["code"] == "forbidden"
    status, _ = await http(server, "POST", "/v1/media/uploads", body={})
    assert status == 401
    for bad in ({"kind": "short", "max_duration_s": 120}, {"max_duration_s": 0}, {"x": 1}):
        status, resp = await http(
            server, "POST", "/v1/media/uploads", token=server.token("cr", "creator"), body=bad
        )
        assert status == 400, bad


@pytest.mark.parametrize("backend", ["memory"])
async def test_stream_errors_become_clear_answers(server: ServerHandle, cf: FakeCloudflare) -> None:
    tok = server.token("cr", "creator")
    cf.fail_next(429, retry_after=7)
    status, resp = await http(server, "POST", "/v1/media/uploads", token=tok, body={})
    assert status == 429
    assert resp["errors"][0]["code"] == "rate_limited"
    assert resp["errors"][0]["details"] == {"retry_after": 7}
    cf.fail_next(500)
    status, resp = await http(server, "POST", "/v1/media/live-inputs", token=tok, body={})
    assert status == 503 and resp["errors"][0]["code"] == "unavailable"
    cf.api_token = "rotated"  # our token no longer works
    status, resp = await http(server, "POST", "/v1/media/uploads", token=tok, body={})
    assert status == 503 and "OURS_CLOUDFLARE_API_TOKEN" in resp["errors"][0]["message"]
    assert await server.node.storage.db.fetchval("SELECT count(*) FROM media") == 0


async def test_without_cloudflare_video_says_what_to_set(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(tmp_path, database_url=await pg_clusters["embedded"].fresh())
    srv = await start_server(settings, free_port())
    try:
        status, resp = await http(
            srv, "POST", "/v1/media/uploads", token=srv.token("c", "creator"), body={}
        )
        assert status == 503
        assert "OURS_CLOUDFLARE_ACCOUNT_ID" in resp["errors"][0]["message"]
        status, resp = await webhook(srv, b"{}", {"Webhook-Signature": "time=1,sig1=00"})
        assert status == 503 and "OURS_CLOUDFLARE_WEBHOOK_SECRET" in resp["errors"][0]["message"]
    finally:
        await srv.stop()


# -- webhooks -------------------------------------------------------------------------------


async def test_ready_webhook_is_content_created_on_feed_once(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    feed = await connect(server.url, "/feed", server.token("fan"))
    assert (await feed.call("room:join", {"room": "zone:music"}))["ok"]
    data = await upload(server, title="First song", zone="music")
    body = jsonutil.dumpb(cf.ready_video(data["uid"]))
    headers = {"Webhook-Signature": cf.signature(body)}
    status, resp = await webhook(server, body, headers)
    assert status == 200 and resp["data"]["outcome"] == "content.created"
    (event,) = await feed.wait_for("content.created")
    assert event["payload"] == {
        "content_id": data["uid"],
        "kind": "video",
        "creator_id": "cr",
        "title": "First song",
        "zone": "music",
        "url": f"https://customer-f33zs165nr7gyfy4.cloudflarestream.com/{data['uid']}/manifest/video.m3u8",
    }
    assert set(event["subjects"]) == {f"content:{data['uid']}", "zone:music", "user:cr"}
    # Stream delivers it again, verbatim and re-signed: nothing more happens
    status, resp = await webhook(server, body, headers)
    assert status == 200 and resp["data"]["outcome"] == "duplicate"
    status, resp = await webhook(server, body, {"Webhook-Signature": cf.signature(body)})
    assert status == 200 and resp["data"]["outcome"] == "duplicate"
    db = server.node.storage.db
    # a later event on the same room arrives after anything the duplicates could have sent
    await server.publish(
        {"type": "content.liked", "subjects": ["zone:music"], "payload": {"content_id": "x"}}
    )
    await feed.wait_for("content.liked")

    async def logged() -> bool:  # the Redis bus writes the event log in a consumer
        return bool(await db.fetchval("SELECT count(*) FROM events WHERE type = 'content.liked'"))

    await until(logged)
    assert len(feed.received["content.created"]) == 1
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'content.created'") == 1
    row = await db.fetchrow("SELECT * FROM media WHERE uid = $1", data["uid"])
    assert row["state"] == "ready" and row["duration_s"] == 5.5
    await feed.close()


@pytest.mark.parametrize("backend", ["memory"])
async def test_forged_or_stale_stream_webhooks_are_refused(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    data = await upload(server, zone="music")
    body = jsonutil.dumpb(cf.ready_video(data["uid"]))
    now = int(time.time())
    cases = [
        {"Webhook-Signature": cf.signature(body, secret="0" * 32)},  # forged
        {"Webhook-Signature": cf.signature(body, at=now - 600)},  # stale
        {"Webhook-Signature": cf.signature(body, at=now + 600)},  # from the future
        {"Webhook-Signature": cf.signature(body + b" ")},  # another body
        {"Webhook-Signature": "sig1=abc"},
        {},
        {"cf-webhook-auth": "guess"},
    ]
    for headers in cases:
        status, resp = await webhook(server, body, headers)
        assert status == 401, headers
        assert resp["errors"][0]["code"] == "unauthorized"
    db = server.node.storage.db
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert await db.fetchval("SELECT state FROM media WHERE uid = $1", data["uid"]) == "pending"
    assert await db.fetchval("SELECT count(*) FROM webhook_receipts") == 0
    # signed, but not JSON
    status, _ = await webhook(server, b"nope", {"Webhook-Signature": cf.signature(b"nope")})
    assert status == 400


@pytest.mark.parametrize("backend", ["memory"])
async def test_live_input_key_once_and_connect_disconnect_events(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    status, resp = await http(
        server,
        "POST",
        "/v1/media/live-inputs",
        token=server.token("cr", "creator"),
        body={"title": "Friday set", "zone": "music"},
    )
    assert status == 201, resp
    data = resp["data"]
    uid, key = data["uid"], data["stream_key"]
    assert data["rtmps_url"] == "rtmps://live.cloudflare.com:443/live/"
    assert key == cf.live_inputs[uid]["rtmps"]["streamKey"]
    assert cf.requests[-1][2]["defaultCreator"] == "cr"
    # stored sealed with the master key, bound to its row; the key is nowhere in clear
    db = server.node.storage.db
    sealed = await db.fetchval("SELECT stream_key FROM live_inputs WHERE uid = $1", uid)
    assert key.encode() not in sealed
    assert server.node.keyring.open_secret(sealed, live_key_aad(uid)) == key
    dump = await db.fetch("SELECT * FROM live_inputs")
    assert key not in str([dict(r) for r in dump])

    viewer = await connect(server.url, "/live", server.token("fan"))
    assert (await viewer.call("room:join", {"room": f"live:{uid}"}))["ok"]
    # Cloudflare Notifications: the destination secret in cf-webhook-auth
    note = jsonutil.dumpb(cf.live_notification(uid, "live_input.connected"))
    status, resp = await webhook(server, note, {"cf-webhook-auth": NOTIFY_SECRET})
    assert status == 200 and resp["data"]["outcome"] == "live.started"
    status, resp = await webhook(server, note, {"cf-webhook-auth": NOTIFY_SECRET})
    assert resp["data"]["outcome"] == "duplicate"
    (started,) = await viewer.wait_for("live.started")
    assert started["payload"] == {
        "live_id": uid,
        "host_id": "cr",
        "kind": "video",
        "title": "Friday set",
    }
    # the same notification with a Webhook-Signature works too
    note = jsonutil.dumpb(cf.live_notification(uid, "live_input.disconnected"))
    status, resp = await webhook(server, note, {"Webhook-Signature": cf.signature(note)})
    assert status == 200 and resp["data"]["outcome"] == "live.ended"
    (ended,) = await viewer.wait_for("live.ended")
    assert ended["payload"]["live_id"] == uid and ended["payload"]["duration_s"] >= 0
    unknown = jsonutil.dumpb(cf.live_notification("f" * 32, "live_input.connected"))
    status, resp = await webhook(server, unknown, {"Webhook-Signature": cf.signature(unknown)})
    assert resp["data"]["outcome"] == "unknown live input"
    await viewer.close()


# -- playback -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory"])
async def test_private_video_plays_with_a_signed_token(
    server: ServerHandle, cf: FakeCloudflare
) -> None:
    private = await upload(server, title="Members only", require_signed_urls=True)
    path = f"/v1/media/{private['uid']}/playback"
    status, resp = await http(server, "GET", path, token=server.token("cr", "creator"))
    assert status == 409 and resp["errors"][0]["code"] == "conflict"  # not ready yet
    body = jsonutil.dumpb(cf.ready_video(private["uid"]))
    assert (await webhook(server, body, {"Webhook-Signature": cf.signature(body)}))[0] == 200

    status, resp = await http(server, "GET", path + "?ttl=600", token=server.token("cr", "creator"))
    assert status == 200, resp
    play = resp["data"]
    assert play["signed"] is True and private["uid"] not in play["hls"]
    claims = cf.check_playback(play["hls"])  # what Stream's edge verifies
    assert claims["sub"] == private["uid"]
    assert claims["kid"] == server.settings.cloudflare_signing_key_id
    assert 0 < claims["exp"] - time.time() <= 600
    assert cf.check_playback(play["dash"])["sub"] == private["uid"]

    status, resp = await http(server, "GET", path, token=server.token("stranger"))
    assert status == 403
    status, resp = await http(server, "GET", path, token=API_KEY)  # the platform backend
    assert status == 200 and cf.check_playback(resp["data"]["hls"])["sub"] == private["uid"]
    status, _ = await http(server, "GET", path)
    assert status == 401
    status, _ = await http(server, "GET", "/v1/media/nope00/playback", token=API_KEY)
    assert status == 404

    public = await upload(server, title="Teaser")
    body = jsonutil.dumpb(cf.ready_video(public["uid"]))
    await webhook(server, body, {"Webhook-Signature": cf.signature(body)})
    status, resp = await http(
        server, "GET", f"/v1/media/{public['uid']}/playback", token=server.token("stranger")
    )
    assert status == 200 and resp["data"]["token"] is None
    assert resp["data"]["hls"].endswith(f"/{public['uid']}/manifest/video.m3u8")


@pytest.mark.parametrize("backend", ["memory"])
async def test_old_webhook_receipts_are_pruned_daily(server: ServerHandle) -> None:
    from media.feature import PRUNE_JOB, MediaFeature

    db = server.node.storage.db
    job = await db.fetchrow("SELECT * FROM jobs WHERE kind = $1", PRUNE_JOB)
    assert job is not None and job["state"] == "pending"
    await db.execute(
        "INSERT INTO webhook_receipts (provider, receipt_id, received_at) VALUES"
        " ('cloudflare', 'old', now() - interval '8 days'), ('cloudflare', 'new', now())"
    )
    feature = server.features.media
    assert isinstance(feature, MediaFeature)
    await feature._prune_receipts({})
    assert [r["receipt_id"] for r in await db.fetch("SELECT * FROM webhook_receipts")] == ["new"]
