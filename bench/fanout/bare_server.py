"""The "bare" baseline for bench/fanout: python-socketio 5.x AsyncServer on aiohttp
(+ uvloop), built the obvious way, exposing the same surface the benchmark uses
on the project server:

  - GET  /health                          -> 200
  - namespace /feed, event "room:join" {room} -> ack {ok: true, data: {room}}
  - POST /v1/events {type, subjects, payload} -> 202 {success, data: {id}} and
    emits `type` with envelope {id, type, actor, subjects, payload, ts} to every
    room in `subjects` on /feed.

No persistence, no auth checks (the Authorization header is accepted as is).

Run: python bare_server.py --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import socketio
from aiohttp import web

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None


def disable_ws_compression() -> None:
    """Make python-engineio's aiohttp driver refuse permessage-deflate.

    aiohttp's WebSocketResponse negotiates permessage-deflate by default
    (compress=True) and socket.io-client / browsers offer it, so the obvious
    server deflates every frame separately for every client. This switch
    exists only to measure what that costs (server "bare-nodeflate").
    """
    import functools

    from engineio.async_drivers import aiohttp as eio_aiohttp

    eio_aiohttp.WebSocketResponse = functools.partial(eio_aiohttp.WebSocketResponse, compress=False)


sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
app = web.Application()
sio.attach(app)


@sio.on("connect", namespace="/feed")
async def feed_connect(sid, environ, auth):
    return True


@sio.on("room:join", namespace="/feed")
async def feed_join(sid, data):
    room = data.get("room") if isinstance(data, dict) else None
    if not isinstance(room, str) or not room:
        return {"ok": False, "error": {"code": "validation", "message": "room required"}}
    await sio.enter_room(sid, room, namespace="/feed")
    return {"ok": True, "data": {"room": room}}


async def health(request: web.Request) -> web.Response:
    return web.json_response({"success": True, "data": {"status": "ok"}})


async def publish(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError as exc:
        return web.json_response(
            {"success": False, "error": {"code": "bad_json", "message": str(exc)}}, status=400
        )
    if not isinstance(body, dict):
        body = {}
    subjects = body.get("subjects")
    if not isinstance(body.get("type"), str) or not isinstance(subjects, list) or not subjects:
        err = {"code": "validation", "message": "type and subjects required"}
        return web.json_response({"success": False, "error": err}, status=422)
    env = {
        "id": str(uuid.uuid4()),
        "type": body["type"],
        "actor": {"type": "api_key", "id": "bench"},
        "subjects": subjects,
        "payload": body.get("payload") or {},
        "ts": datetime.now(UTC).isoformat(),
    }
    await sio.emit(body["type"], env, to=subjects, namespace="/feed")
    return web.json_response({"success": True, "data": {"id": env["id"]}}, status=202)


app.router.add_get("/health", health)
app.router.add_post("/v1/events", publish)


async def main(host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    print(
        f"bare python-socketio {metadata.version('python-socketio')} "
        f"baseline listening on http://{host}:{port} (uvloop={'yes' if uvloop else 'no'})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--no-ws-compress",
        action="store_true",
        help="refuse permessage-deflate (default: aiohttp's default, which accepts it)",
    )
    a = p.parse_args()
    if a.no_ws_compress:
        disable_ws_compression()
    if uvloop is not None:
        uvloop.run(main(a.host, a.port))
    else:
        asyncio.run(main(a.host, a.port))
