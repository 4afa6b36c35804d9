"""The app factory: aiohttp application + Socket.IO server of one node, and `serve`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from config import DEV_SECRETS_FILE, Settings
from server.http_api import NODE, add_routes, request_context
from server.node import Node

log = logging.getLogger("ours.app")


def create_app(settings: Settings) -> web.Application:
    node = Node(settings)
    app = web.Application(
        middlewares=[request_context],
        # bodies are capped per route by read_json; this is only the outer bound
        client_max_size=max(settings.max_payload_bytes * 2, 1024 * 1024),
    )
    app[NODE] = node
    assert node.sio is not None
    node.sio.attach(app)
    add_routes(app)
    for feature in node.features.values():
        feature.routes(app)

    async def on_startup(app: web.Application) -> None:
        await node.start()

    async def on_shutdown(app: web.Application) -> None:
        await node.drain()

    async def on_cleanup(app: web.Application) -> None:
        await node.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        loop = asyncio.new_event_loop()
    if (settings.data_dir / DEV_SECRETS_FILE).exists():
        log.warning(
            "development secrets in use: JWT secret, API key and master key are in %s",
            (settings.data_dir / DEV_SECRETS_FILE).resolve(),
        )
    log.info("serving", extra={"host": host, "port": port, "loop": type(loop).__module__})
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        shutdown_timeout=settings.shutdown_timeout,
        print=lambda *_: None,
        access_log=None,
        loop=loop,
    )
