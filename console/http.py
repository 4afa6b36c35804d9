"""HTTP routes of the console: the page at GET /console/, its static files under
/console/static/, and GET /v1/admin/metrics/summary for the operator view."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from console.metrics_summary import summary
from server import metrics
from server.http_api import NODE, envelope, require_admin

STATIC = Path(__file__).parent / "static"

# the page loads only its own files and talks only to this origin (http and websocket)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/console/")


async def metrics_summary(request: web.Request) -> web.Response:
    """This process's metrics as numbers (admin: an API key or an admin user token)."""
    require_admin(request)
    node = request.app[NODE]
    data = summary(metrics.REGISTRY, sorted(node.namespaces))
    data["node"] = {
        "uptime_s": round(time.time() - node.started_at, 1),
        "draining": node.draining,
        "admin_ui": node.settings.admin_ui_password is not None,
    }
    return envelope(request, data)


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/console/"):
        response.headers.update(SECURITY_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console", to_index)
    app.router.add_get("/console/", index)
    app.router.add_static("/console/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/v1/admin/metrics/summary", metrics_summary)
    app.on_response_prepare.append(_console_headers)
