"""The web console in a real browser (Debian's Chromium through playwright-core): two users sign
in, open a direct conversation, see typing, the message and its read receipt; `ours publish`
shows up in the live feed; the inbox hears the message; an audio room's stage goes from a raised
hand to an invited, accepted and muted speaker (LiveKit is the fake of tests/fakes/livekit.py);
the operator view draws this server's metrics for an admin; with two nodes on Redis it lists
both (tests/browser/cluster.test.mjs).

The browser side is tests/browser/console.test.mjs. With OURS_SCREENSHOTS_DIR set it also takes
screenshots there (`OURS_SCREENSHOTS_DIR=docs/screenshots` refreshes the ones in docs/).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest

from config import Settings
from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings
from tests.fakes.livekit import FakeLiveKit
from tests.helpers import ROOT, ServerHandle, connect, settings_env, spawn_server

BROWSER_DIR = Path(ROOT) / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CONTENT_ID = "console-browser-c1"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "run `npm ci` in tests/browser (scripts/test does)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (scripts/test installs Debian's)"
    return None


# CI installs both; there a missing browser is a failure, not a skip
pytestmark = [
    pytest.mark.e2e,
    # the console is a client: one backend (the embedded default of `scripts/serve`) is enough
    pytest.mark.backends("memory"),
    pytest.mark.skipif(
        _missing() is not None and os.environ.get("CI") != "true", reason=str(_missing())
    ),
]


@pytest.fixture
async def settings(settings: Settings) -> AsyncIterator[Settings]:
    """The conftest settings with audio rooms on a fake LiveKit."""
    fake = FakeLiveKit()
    await fake.start(free_port())
    settings.livekit_url = fake.url
    settings.livekit_ws_url = "wss://livekit.test"
    settings.livekit_api_key = fake.api_key
    settings.livekit_api_secret = fake.api_secret
    yield settings
    await fake.stop()


async def test_console_dm_feed_and_operator_view(server: ServerHandle) -> None:
    shots = os.environ.get("OURS_SCREENSHOTS_DIR")
    env = settings_env(server.settings)
    config = {
        "url": server.url,
        "tokens": {
            "alice": server.token("alice", "creator"),  # creators may host audio rooms
            "bob": server.token("bob"),
            "admin": server.token("ops", "admin"),
            "forged": jwt.encode(
                {"sub": "mallory", "exp": int(time.time()) + 600},
                "not-the-server-secret-0123456789",
            ),
        },
        "publish": {
            "argv": [
                sys.executable,
                "-m",
                "app",
                "publish",
                "content.created",
                "--json",
                json.dumps({"content_id": CONTENT_ID, "kind": "post"}),
                "--subject",
                "zone:music",
                "--url",
                server.url,
            ],
            "env": {**env, "PYTHONPATH": ROOT},
            "contentId": CONTENT_ID,
        },
        "screenshots": str(Path(ROOT, shots)) if shots else None,
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(BROWSER_DIR / "console.test.mjs"),
        cwd=str(BROWSER_DIR),
        env={**os.environ, "CONSOLE_TEST": json.dumps(config), "CHROMIUM": CHROMIUM},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    lines = out.decode(errors="replace").splitlines()
    steps = [json.loads(line) for line in lines if line.startswith("{")]
    done = [s["step"] for s in steps]
    assert proc.returncode == 0, "\n".join(lines[-40:])
    for expected in (
        "reload keeps the session",
        "feed shows the published event",
        "bob sees alice typing",
        "bob receives the message",
        "alice sees bob's read receipt",
        "alice receives the reply",
        "bob's inbox hears the message and marks it read",
        "presence panel answers",
        "stage: hand raised, invited, accepted, muted",
        "a refused token signs out",
        "operator view refuses a user token",
        "operator charts drawn",
        "done",
    ):
        assert expected in done, f"missing step {expected!r}; got {done}"


async def test_operator_view_shows_every_node_of_the_cluster(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    """Two `ours serve` processes on Redis: the operator view on one lists both, up."""
    settings = make_settings(
        tmp_path,
        redis_url=REDIS_URL,
        database_url=await pg_clusters["machine"].fresh(),
        node_heartbeat_s=0.5,
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        viewer = await connect(b.url, "/feed", b.token("viewer"))  # a connection on B
        ids: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(ids) < 2:
            assert time.monotonic() < deadline, ids
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    a.url + "/v1/admin/cluster",
                    headers={"Authorization": f"Bearer {a.token('ops', 'admin')}"},
                ) as r,
            ):
                nodes = (await r.json())["data"]["nodes"]
            ids = {n["url"]: n["id"] for n in nodes if n["state"] == "up"}
            await asyncio.sleep(0.2)
        shots = os.environ.get("OURS_SCREENSHOTS_DIR")
        config = {
            "url": a.url,
            "token": a.token("ops", "admin"),
            "nodes": [ids[a.url], ids[b.url]],
            "screenshots": str(Path(ROOT, shots)) if shots else None,
        }
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(BROWSER_DIR / "cluster.test.mjs"),
            cwd=str(BROWSER_DIR),
            env={**os.environ, "CLUSTER_TEST": json.dumps(config), "CHROMIUM": CHROMIUM},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        lines = out.decode(errors="replace").splitlines()
        done = [json.loads(line)["step"] for line in lines if line.startswith("{")]
        assert proc.returncode == 0, "\n".join(lines[-40:])
        for expected in ("signed in", "both nodes up", "per-node charts drawn", "done"):
            assert expected in done, f"missing step {expected!r}; got {done}"
        await viewer.close()
    finally:
        await a.stop()
        await b.stop()
