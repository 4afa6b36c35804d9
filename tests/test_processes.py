"""Real `ours serve` processes: two nodes on Redis behave as one; the embedded default starts
with nothing configured; SIGTERM drains and exits in time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.conftest import REDIS_URL, PgCluster, free_port, make_settings
from tests.helpers import ROOT, connect, spawn_server, start_server, stop_process, wait_http

CREATED = {
    "type": "content.created",
    "subjects": ["zone:music"],
    "payload": {"content_id": "c_9", "kind": "post"},
}


async def test_two_processes_on_redis_behave_as_one(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, redis_url=REDIS_URL, database_url=await pg_clusters["machine"].fresh()
    )
    a = await spawn_server(settings, free_port())
    b = await spawn_server(settings, free_port())
    try:
        on_a = await connect(a.url, "/feed", a.token("ua"))
        on_b = await connect(b.url, "/feed", b.token("ub"))
        assert (await on_a.call("room:join", {"room": "zone:music"}))["ok"]
        assert (await on_b.call("room:join", {"room": "zone:music"}))["ok"]
        user_on_a = await connect(a.url, "/notifications", a.token("fan"))

        status, body = await b.publish(CREATED)  # published through B
        assert status == 202
        for c in (on_a, on_b):
            (env,) = await c.wait_for("content.created")
            assert env["id"] == body["data"]["id"]

        status, _ = await a.publish(  # published through A, for a user connected to A
            {
                "type": "user.followed",
                "subjects": ["user:fan"],
                "payload": {"follower_id": "x", "followee_id": "fan"},
            }
        )
        await user_on_a.wait_for("user.followed")
        await asyncio.sleep(0.5)
        assert len(on_a.received["content.created"]) == 1  # once, not once per node
        assert len(on_b.received["content.created"]) == 1
        for c in (on_a, on_b, user_on_a):
            await c.close()
    finally:
        await a.stop()
        await b.stop()


async def test_a_worker_process_does_the_fanout_through_the_room_log(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    """`ours serve` with OURS_RUN_CONSUMERS=false next to `ours worker` (the Procfile's web +
    worker): the worker's fan-out reaches the sockets with room-log offsets (recoverable)."""
    settings = make_settings(
        tmp_path,
        redis_url=REDIS_URL,
        database_url=await pg_clusters["machine"].fresh(),
        run_consumers=False,
    )
    web = await start_server(settings, free_port())
    worker = await spawn_server(settings, 0, "worker")
    try:
        c = await connect(web.url, "/feed", web.token("u1"))
        assert (await c.call("room:join", {"room": "zone:music"}))["ok"]
        status, body = await web.publish(CREATED)
        assert status == 202
        (env,) = await c.wait_for("content.created", timeout=20)
        assert env["id"] == body["data"]["id"]
        (meta,) = c.meta["content.created"]
        assert set(meta["offsets"]) == {"zone:music"}
        await c.close()
    finally:
        await web.stop()
        await worker.stop()


async def test_embedded_default_starts_with_nothing_configured(tmp_path: Path) -> None:
    """The README's first command: no Redis, no Postgres, no keys. Dev secrets are generated."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OURS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": ROOT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            await wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=60)
        except RuntimeError:
            assert proc.stderr is not None
            raise AssertionError(proc.stderr.read().decode()[-3000:]) from None
        secrets_file = tmp_path / "var" / "dev-secrets.env"
        assert secrets_file.exists()
        assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
        token = subprocess.run(
            [sys.executable, "-m", "app", "token", "--user", "42"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for ns in ("/feed", "/live", "/notifications", "/messages", "/presence"):
            c = await connect(f"http://127.0.0.1:{port}", ns, token)
            await c.close()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "publish",
                "content.created",
                "--json",
                '{"content_id": "c1", "kind": "post"}',
                "--subject",
                "zone:music",
                "--url",
                f"http://127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert '"success":true' in out.stdout
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/ready") as r:
            assert r.status == 200
    finally:
        assert stop_process(proc) == 0
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert "dev-secrets.env" in log  # says where the generated secrets are
    assert token not in log  # never a token in the logs
    secret = next(
        line.split("=", 1)[1]
        for line in secrets_file.read_text().splitlines()
        if line.startswith("OURS_JWT_SECRET=")
    )
    assert secret not in log


async def test_bad_setting_stops_startup_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OURS_")}
    for var, value in (
        ("OURS_PORT", "eighty"),
        ("OURS_REDIS_URL", "http://x"),
        ("OURS_JWT_SECRET", "short"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "app", "serve"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": ROOT, var: value},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 2
        assert var in out.stderr


async def test_sigterm_drains_clients_and_exits_within_10s(
    tmp_path: Path, pg_clusters: dict[str, PgCluster]
) -> None:
    settings = make_settings(
        tmp_path, database_url=await pg_clusters["embedded"].fresh(), shutdown_timeout=10
    )
    srv = await spawn_server(settings, free_port())
    sio = socketio.AsyncClient(reconnection=False)
    notices: list[dict[str, Any]] = []
    disconnected = asyncio.Event()
    sio.on("server:shutdown", lambda d: notices.append(d), namespace="/feed")
    sio.on("disconnect", lambda *a: disconnected.set(), namespace="/feed")
    await sio.connect(
        srv.url, namespaces=["/feed"], auth={"token": srv.token("u")}, transports=["websocket"]
    )
    assert srv.proc is not None
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(disconnected.wait(), 10)
    code = await asyncio.to_thread(srv.proc.wait, 10)
    assert time.monotonic() - started < 10
    assert code == 0
    assert notices and notices[0]["reconnect"] is True
    srv.proc = None
