"""HTTP API (aiohttp): one response envelope, `/v1/` paths, API-key and user-JWT auth.

Envelope: {"success": bool, "data": ..., "errors": [...], "meta": {"requestId": ...}}.
"""

from __future__ import annotations

import copy
import hmac
import inspect
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from server import cluster, jsonutil, logs, metrics
from server.auth import Principal, Role
from server.errors import HTTP_STATUS, RETRY_AFTER_S, ApiError, Code, refusal_for_outage
from server.events import build_event, schemas
from server.node import Node
from server.openapi import openapi_document
from server.ratelimit import Decision

log = logging.getLogger("ours.http")

NODE = web.AppKey("node", Node)
REQUEST_ID = web.RequestKey("request_id", str)
RATE = web.RequestKey("rate", Decision)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def envelope(
    request: web.Request, data: Any = None, *, status: int = 200, errors: list[Any] | None = None
) -> web.Response:
    body = {
        "success": not errors,
        "data": data,
        "errors": errors or [],
        "meta": {"requestId": request.get(REQUEST_ID)},
    }
    return web.Response(body=jsonutil.dumpb(body), status=status, content_type="application/json")


def error_response(
    request: web.Request, err: ApiError, headers: dict[str, str] | None = None
) -> web.Response:
    resp = envelope(request, None, status=HTTP_STATUS[err.code], errors=[err.body()])
    if headers:
        resp.headers.update(headers)
    return resp


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
    request[REQUEST_ID] = rid
    token = logs.request_id.set(rid)
    started = time.perf_counter()
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        try:
            limited = await _rate_limit(request, route_name)
            resp = limited if limited is not None else await handler(request)
        except ApiError as err:
            resp = error_response(request, err)
        except web.HTTPRequestEntityTooLarge:
            resp = error_response(request, ApiError(Code.PAYLOAD_TOO_LARGE, "body too large"))
        except web.HTTPException as exc:
            if exc.status >= 400 and not request.path.startswith("/socket.io"):
                code = {404: Code.NOT_FOUND, 405: Code.BAD_REQUEST}.get(
                    exc.status, Code.BAD_REQUEST
                )
                resp = error_response(request, ApiError(code, exc.reason))
                resp.set_status(exc.status)
            else:
                raise
        except Exception as exc:
            refusal = refusal_for_outage(exc, log)
            if refusal is None:
                log.exception("request failed", extra={"path": request.path})
                resp = error_response(request, ApiError(Code.INTERNAL, "internal error"))
            else:
                resp = error_response(request, refusal, {"Retry-After": str(RETRY_AFTER_S)})
        if not resp.prepared:
            resp.headers["X-Request-Id"] = rid
        _rate_headers(request, resp)
        metrics.HTTP_REQUESTS.labels(request.method, route_name, str(resp.status)).inc()
        if not request.path.startswith("/socket.io"):
            log.info(
                "http",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": resp.status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return resp
    finally:
        logs.request_id.reset(token)


UNLIMITED_PATHS = ("/health", "/ready", "/metrics", "/socket.io", "/console")
WEBHOOK_PATHS = "/v1/webhooks/"  # signed by their provider: a bucket per route, not per IP


async def _rate_limit(request: web.Request, route: str) -> web.Response | None:
    """Token buckets for HTTP: an API key has its own (large) bucket, so does each provider
    webhook route (a busy LiveKit host sends many from one IP); a user token takes from the
    user's and the IP's; anything else from the IP's. 429 + Retry-After when empty."""
    if request.path.startswith(UNLIMITED_PATHS):
        return None
    node = request.app[NODE]
    if request.path.startswith(WEBHOOK_PATHS):
        decision = await node.limits.limiter.take(
            f"hook:{route}", node.settings.rate_webhook_per_min, 60
        )
        return _allow_or_refuse(request, decision)
    name = f"{request.method} {route}"
    ip = (
        request.remote
        if not node.settings.trust_forwarded_for
        else (request.headers.get("X-Forwarded-For", "").split(",")[0].strip() or request.remote)
    )
    try:
        key_id = require_api_key(request)
    except ApiError:
        key_id = None
    if key_id is not None:
        decision = await node.limits.limiter.take(
            f"key:{key_id}", node.settings.rate_api_key_per_min, 60
        )
    else:
        user = None
        try:
            user = node.verifier.verify(_bearer(request)).user_id
        except ApiError:
            pass
        decision = await node.limits.check(user, ip, name)
    return _allow_or_refuse(request, decision)


def _allow_or_refuse(request: web.Request, decision: Decision) -> web.Response | None:
    request[RATE] = decision
    if decision.allowed:
        return None
    retry = max(1, math.ceil(decision.retry_after))
    err = ApiError(
        Code.RATE_LIMITED,
        f"too many requests; retry in {retry}s",
        {"retry_after": round(decision.retry_after, 3)},
    )
    return error_response(request, err, {"Retry-After": str(retry)})


def _rate_headers(request: web.Request, resp: web.StreamResponse) -> None:
    decision = request.get(RATE)
    if decision is not None and not resp.prepared:
        resp.headers["X-RateLimit-Limit"] = str(decision.limit)
        resp.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        resp.headers["X-RateLimit-Reset"] = str(math.ceil(decision.reset))


def api_key_id(request: web.Request) -> str | None:
    """The short id of the API key presented as `Authorization: Bearer <key>`, if it is one."""
    key = _bearer(request)
    for i, known in enumerate(request.app[NODE].settings.api_keys):
        if hmac.compare_digest(key.encode(), known.encode()):
            return f"key{i}"
    return None


def require_api_key(request: web.Request) -> str:
    """The short id of the API key presented; `unauthorized` without a valid one."""
    key_id = api_key_id(request)
    if key_id is None:
        raise ApiError(
            Code.UNAUTHORIZED, "a valid API key is required: Authorization: Bearer <key>"
        )
    return key_id


def require_caller(request: web.Request) -> str | Principal:
    """The platform's backend (an API key: its short id) or a user (a verified token)."""
    return api_key_id(request) or require_user(request)


def require_user(request: web.Request) -> Principal:
    principal = request.app[NODE].verifier.verify(_bearer(request))
    logs.user_id.set(principal.user_id)
    return principal


def require_admin(request: web.Request) -> str:
    """An API key (its short id), or a user token with the admin role (`user:<id>`)."""
    caller = require_caller(request)
    if isinstance(caller, str):
        return caller
    if caller.role is not Role.ADMIN:
        raise ApiError(Code.FORBIDDEN, "admins only")
    return f"user:{caller.user_id}"


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(Code.UNAUTHORIZED, "missing Authorization: Bearer <credential>")
    return value.strip()


async def read_json(request: web.Request) -> Any:
    limit = request.app[NODE].settings.max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(Code.PAYLOAD_TOO_LARGE, f"body over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError(Code.PAYLOAD_TOO_LARGE, f"body over {limit} bytes")
    try:
        return jsonutil.loads(body)
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, "body is not valid JSON") from None


# -- routes -----------------------------------------------------------------------------------


async def post_event(request: web.Request) -> web.Response:
    key_id = require_api_key(request)
    raw = await read_json(request)
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not 0 < len(idem) <= 200:
        raise ApiError(Code.BAD_REQUEST, "Idempotency-Key must be 1-200 characters")
    event = build_event(raw, idempotency_key=idem, scope=key_id)
    node = request.app[NODE]
    if node.backlog > node.settings.max_backlog:
        reason = f"fan-out is {node.backlog} events behind; retry shortly"
    elif not await node.fanout.flowing():
        reason = "fan-out is held back by full socket buffers; retry shortly"
    else:
        reason = ""
    if reason:
        err = ApiError(Code.UNAVAILABLE, reason, {"retry_after": 1})
        return error_response(request, err, {"Retry-After": "1"})
    new = await node.bus.publish(event)
    metrics.EVENTS_PUBLISHED.labels(event.type, "new" if new else "duplicate").inc()
    logs.event_id.set(event.id)
    log.info("event published", extra={"type": event.type, "duplicate": not new})
    return envelope(request, {"id": event.id, "duplicate": not new}, status=202)


async def event_types(request: web.Request) -> web.Response:
    return envelope(request, schemas())


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return envelope(request, {"status": "ok", "uptime_s": round(time.time() - node.started_at, 1)})


async def ready(request: web.Request) -> web.Response:
    node = request.app[NODE]
    checks = {"storage": await node.storage.ping(), "bus": await node.bus.ping()}
    if node.redis is not None:  # the shared client: room logs, presence, limits, counters
        try:
            checks["redis"] = bool(await node.redis.ping())
        except (OSError, RedisError):
            checks["redis"] = False
    if node.draining:
        checks["accepting"] = False
    if all(checks.values()):
        return envelope(request, {"status": "ready", "checks": checks})
    return envelope(
        request,
        {"status": "not ready", "checks": checks},
        status=503,
        errors=[
            {
                "code": Code.UNAVAILABLE.value,
                "message": "down: " + ", ".join(k for k, up in checks.items() if not up),
            }
        ],
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(metrics.REGISTRY))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document: the described routes, plus every other route the app serves (its
    handler's docstring as summary), so the document never misses one."""
    doc = copy.deepcopy(openapi_document())
    paths = doc["paths"]
    for route in request.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        method = route.method.lower()
        if method == "head" or path.startswith(("/socket.io", "/console/static")):
            continue
        entry = paths.setdefault(path, {})
        if method not in entry:
            summary = (inspect.getdoc(route.handler) or route.handler.__name__).split("\n")[0]
            entry[method] = {
                "summary": summary,
                "responses": {
                    "default": {
                        "description": "the response envelope; see docs/protocol.md",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Envelope"}
                            }
                        },
                    }
                },
            }
    return web.json_response(doc, dumps=jsonutil.dumps)


async def dlq_list(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, "limit must be an integer") from None
    return envelope(request, await request.app[NODE].bus.dead_letters(limit))


async def dlq_replay(request: web.Request) -> web.Response:
    actor = require_admin(request)
    raw = await read_json(request) if request.can_read_body else {}
    if not isinstance(raw, dict):
        raise ApiError(Code.BAD_REQUEST, 'body must be an object: {} for all or {"ids": [...]}')
    ids = raw.get("ids")
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, str) and len(i) < 64 for i in ids)
    ):
        raise ApiError(Code.BAD_REQUEST, "ids must be a list of dead-letter ids")
    node = request.app[NODE]
    count = await node.bus.replay(ids)
    await node.audit.record(actor, "dlq.replay", None, None, {"ids": ids, "count": count})
    log.warning("dead letters replayed", extra={"actor": actor, "count": count})
    return envelope(request, {"replayed": count})


async def audit_list(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    try:
        since = datetime.fromisoformat(q["since"]) if "since" in q else None
        before_id = int(q["before_id"]) if "before_id" in q else None
        limit = min(500, max(1, int(q.get("limit", "100"))))
    except ValueError:
        raise ApiError(
            Code.BAD_REQUEST, "since is ISO-8601; before_id and limit are integers"
        ) from None
    rows = await request.app[NODE].audit.query(
        actor=q.get("actor"),
        target=q.get("target"),
        action=q.get("action"),
        since=since,
        before_id=before_id,
        limit=limit,
    )
    return envelope(request, rows)


async def cluster_status(request: web.Request) -> web.Response:
    require_admin(request)
    return envelope(request, await cluster.gather(request.app[NODE]))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/admin/audit", audit_list)
    app.router.add_get("/v1/admin/cluster", cluster_status)
    app.router.add_post("/v1/events", post_event)
    app.router.add_get("/v1/events/types", event_types)
    app.router.add_get("/v1/admin/dlq", dlq_list)
    app.router.add_post("/v1/admin/dlq/replay", dlq_replay)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
