"""The console's server side: the page and its files, the operator's metrics summary (admins
only), the vendored socket.io-client, and the Socket.IO Admin UI's `/admin` namespace."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from engineio.async_socket import AsyncSocket

from config import Settings
from tests.conftest import free_port
from tests.helpers import ROOT, ServerHandle, connect, start_server

VENDOR = Path(ROOT) / "console" / "static" / "vendor" / "socket.io.min.js"
BROWSER = Path(ROOT) / "tests" / "browser"
NAMESPACES = ["/feed", "/live", "/messages", "/notifications", "/presence"]


async def get(
    server: ServerHandle, path: str, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(server.url + path, headers=headers, allow_redirects=False) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def summary(server: ServerHandle, token: str) -> dict[str, Any]:
    status, _, body = await get(server, "/v1/admin/metrics/summary", token)
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)["data"]
    return data


async def until(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


# -- the page ---------------------------------------------------------------------------------


async def test_console_page_and_files(server: ServerHandle) -> None:
    status, headers, body = await get(server, "/console/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="static/vendor/socket.io.min.js"' in body
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"

    status, headers, _ = await get(server, "/console")
    assert status == 301 and headers["Location"] == "/console/"

    status, headers, body = await get(server, "/console/static/js/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert b"mountOperator" in body
    status, _, body = await get(server, "/console/static/vendor/socket.io.min.js")
    assert status == 200 and body == VENDOR.read_bytes()

    for path in ("/console/static/../../pyproject.toml", "/console/static/%2e%2e/feature.py"):
        status, _, body = await get(server, path)
        assert status == 404, path
        assert b"[tool.setuptools]" not in body and b"ConsoleFeature" not in body


def test_vendored_client_is_the_pinned_package() -> None:
    """static/vendor/socket.io.min.js is socket.io-client's own build, at the pinned version."""
    head = VENDOR.read_text()[:200]
    assert "Released under the MIT License." in head  # the license header is kept
    match = re.search(r"Socket\.IO v(\d+\.\d+\.\d+)", head)
    assert match
    lock = json.loads((BROWSER / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/socket.io-client"]["version"]
    assert match.group(1) == pinned
    built = BROWSER / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    if built.exists():  # after `npm ci` in tests/browser
        assert built.read_bytes() == VENDOR.read_bytes()


# -- operator metrics -------------------------------------------------------------------------


async def test_metrics_summary_is_for_admins(server: ServerHandle) -> None:
    status, _, body = await get(server, "/v1/admin/metrics/summary")
    assert status == 401 and json.loads(body)["errors"][0]["code"] == "unauthorized"
    status, _, body = await get(server, "/v1/admin/metrics/summary", server.token("u1"))
    assert status == 403 and json.loads(body)["errors"][0]["code"] == "forbidden"
    data = await summary(server, server.settings.api_keys[0])  # an API key is an admin too
    assert data["node"]["admin_ui"] is False
    assert sorted(data["connections"]) == NAMESPACES


async def test_metrics_summary_follows_connections_and_events(server: ServerHandle) -> None:
    admin = server.token("ops", "admin")
    before = await summary(server, admin)
    feed = await connect(server.url, "/feed", server.token("u1"))
    try:
        after = await summary(server, admin)
        assert after["connections"]["/feed"] == before["connections"]["/feed"] + 1
        assert after["ts"] >= before["ts"]

        await feed.call("room:join", {"room": "zone:console"})
        status, _ = await server.publish(
            {
                "type": "content.created",
                "subjects": ["zone:console"],
                "payload": {"content_id": "x", "kind": "post"},
            }
        )
        assert status == 202
        await feed.wait_for("content.created")

        def count(d: dict[str, Any], key: str) -> float:
            return float(d["events"][key].get("content.created", 0))

        async def fanned_out() -> dict[str, Any] | None:
            d = await summary(server, admin)
            return d if count(d, "by_type") > count(before, "by_type") else None

        later = await until(fanned_out)
        assert count(later, "published") == count(before, "published") + 1
        assert later["events"]["consumed"]["fanout"]["ok"] > 0
        lat = later["fanout_latency"]
        assert lat["count"] > before["fanout_latency"]["count"] and lat["sum"] >= 0
        # cumulative buckets, ascending, +Inf (null) last and equal to the count
        bounds = [b[0] for b in lat["buckets"]]
        assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])
        counts = [b[1] for b in lat["buckets"]]
        assert counts == sorted(counts) and counts[-1] == lat["count"]
        assert isinstance(later["dead_letters"], float | int)
        assert all(v >= 0 for v in later["consumer_lag"].values())
    finally:
        await feed.close()


# -- Socket.IO Admin UI -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["production", "development"])
async def test_admin_ui_namespace_takes_the_admin_password(settings: Settings, mode: str) -> None:
    password = "console-admin-ui-password"
    settings.admin_ui_password = password
    settings.admin_ui_mode = mode  # type: ignore[assignment]
    original = AsyncSocket.handle_post_request
    server = await start_server(settings, free_port())
    try:
        assert AsyncSocket.handle_post_request is not original  # instrumented
        feed = await connect(server.url, "/feed", server.token("u1"))
        admin = await connect(
            server.url, "/admin", None, auth={"username": "admin", "password": password}
        )
        try:
            config = (await admin.wait_for("config"))[0]
            features = config["supportedFeatures"]
            assert "AGGREGATED_EVENTS" in features
            assert "EMIT" not in features and "DISCONNECT" not in features  # read-only
            if mode == "development":  # every socket, and every event, reach the admin UI
                assert "ALL_EVENTS" in features
                sockets = (await admin.wait_for("all_sockets"))[0]
                assert any(s["nsp"] == "/feed" for s in sockets)
            # clients are served as before
            await feed.call("room:join", {"room": "zone:admin-ui"})
            status, _ = await server.publish(
                {
                    "type": "content.created",
                    "subjects": ["zone:admin-ui"],
                    "payload": {"content_id": "a1", "kind": "post"},
                }
            )
            assert status == 202
            assert (await feed.wait_for("content.created"))[0]["payload"]["content_id"] == "a1"
            if mode == "development":
                sent = await admin.wait_for("event_sent")
                assert "/feed" in sent  # event_sent(namespace, sid, [event, data], time)
        finally:
            await admin.close()
            await feed.close()

        for auth in (
            {"username": "admin", "password": "wrong"},
            {"username": "root", "password": password},
            {"password": password},
            None,
        ):
            with pytest.raises(socketio.exceptions.ConnectionError):
                await connect(server.url, "/admin", None, auth=auth)

        data = await summary(server, server.token("ops", "admin"))
        assert data["node"]["admin_ui"] is True
    finally:
        await server.stop()
    assert AsyncSocket.handle_post_request is original  # stop undid the process-wide patch


async def test_admin_ui_is_off_without_a_password(server: ServerHandle) -> None:
    assert server.settings.admin_ui_password is None
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(server.url, "/admin", None, auth={"username": "admin", "password": ""})
