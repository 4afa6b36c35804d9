"""HTTP routes of the console: the page at GET /console/, its static files under
/console/static/, and GET /v1/admin/metrics/summary for the operator view."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web
from pydantic import Field

from console.metrics_summary import summary
from server import metrics
from server.contract import Outgoing
from server.errors import Code
from server.http_api import ADMIN, NODE, envelope, require_admin
from server.openapi import operation

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


class SummaryEvents(Outgoing):
    published: dict[str, float] = Field(
        description="by type: new events that came in over POST /v1/events"
    )
    by_type: dict[str, float] = Field(
        description="by type: every event this process's fan-out consumer handled"
    )
    duplicates: float = Field(description="POST /v1/events repeats (Idempotency-Key)")
    consumed: dict[str, dict[str, float]] = Field(
        description="by consumer group, then result (ok, error, ...)"
    )


class SummarySocketEvents(Outgoing):
    by_event: dict[str, float] = Field(description='by "<namespace> <event>"')
    errors: float = Field(description="socket events answered with an error")


class FanoutLatency(Outgoing):
    buckets: list[tuple[float | None, float]] = Field(
        description="the histogram: [upper bound in seconds (null: +Inf), cumulative count]"
    )
    count: float
    sum: float = Field(description="seconds")


class NodeInfo(Outgoing):
    uptime_s: float
    draining: bool
    admin_ui: bool = Field(description="the Socket.IO Admin UI is enabled")


class MetricsSummary(Outgoing):
    """Counters and the histogram are cumulative since the process started (the page takes
    deltas)."""

    ts: float = Field(description="unix seconds of the reading")
    connections: dict[str, float] = Field(description="open sockets by namespace")
    events: SummaryEvents
    socket_events: SummarySocketEvents
    http: dict[str, float] = Field(description="HTTP answers by status class: 2xx, 4xx, ...")
    fanout_latency: FanoutLatency = Field(
        description="seconds from an event's publication to its delivery to sockets"
    )
    consumer_lag: dict[str, float] = Field(description="events behind, by consumer group")
    dead_letters: float
    node: NodeInfo


@operation(
    "The operator console (a single page; it signs in with an admin token itself)",
    None,
    raw=("text/html", {"type": "string", "description": "the console's HTML page"}),
)
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


@operation(
    "Redirect to /console/",
    None,
    status=301,
    raw=("text/plain", {"type": "string"}),
)
async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/console/")


@operation(
    "This process's metrics as numbers, for the console's operator view",
    MetricsSummary,
    security=ADMIN,
    errors=(Code.FORBIDDEN,),
    example={
        "ts": 1736100131.4,
        "connections": {"/feed": 120.0, "/live": 35.0},
        "events": {
            "published": {"content.liked": 310.0},
            "by_type": {"content.liked": 310.0, "hours.tipped": 12.0},
            "duplicates": 2.0,
            "consumed": {"fanout": {"ok": 322.0}},
        },
        "socket_events": {"by_event": {"/feed room:join": 140.0}, "errors": 1.0},
        "http": {"2xx": 512.0, "4xx": 7.0},
        "fanout_latency": {
            "buckets": [[0.005, 300.0], [0.05, 321.0], [None, 322.0]],
            "count": 322.0,
            "sum": 0.91,
        },
        "consumer_lag": {"fanout": 0.0},
        "dead_letters": 0.0,
        "node": {"uptime_s": 3600.2, "draining": False, "admin_ui": False},
    },
)
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
