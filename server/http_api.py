"""HTTP API (aiohttp): one response envelope, `/v1/` paths, API-key and user-JWT auth.

Envelope: {"success": bool, "data": ..., "errors": [...], "meta": {"requestId": ...}}.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from server import cluster, contract, jsonutil, logs, metrics
from server.asyncapi import asyncapi_document
from server.auth import Principal, Role
from server.errors import (
    HTTP_STATUS,
    REDIS_ERRORS,
    RETRY_AFTER_S,
    ApiError,
    Code,
    refusal_for_outage,
    validate,
)
from server.events import EventInBody, build_event, schemas
from server.node import Node
from server.openapi import Header, openapi_document, operation, operation_of
from server.ratelimit import Decision

#: what a publish refused by admission control is told to wait (Retry-After, seconds)
FANOUT_RETRY_AFTER_S = 1

log = logging.getLogger("ours.http")

NODE = web.AppKey("node", Node)
REQUEST_ID = web.RequestKey("request_id", str)
RATE = web.RequestKey("rate", Decision)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
#: the documents, built on their first request (the routes and namespaces are final by then)
DOCUMENTS = web.AppKey("documents", dict)

#: security of routes the platform's backend or an admin may call (see `require_admin`)
ADMIN = ("apiKey", "adminJwt")
#: security of routes for the signed-in user
USER = ("userJwt",)


def envelope(
    request: web.Request, data: Any = None, *, status: int = 200, errors: list[Any] | None = None
) -> web.Response:
    if contract.ENABLED and not errors:
        _check_data(request, data)
    body = {
        "success": not errors,
        "data": data,
        "errors": errors or [],
        "meta": {"requestId": request.get(REQUEST_ID)},
    }
    return web.Response(body=jsonutil.dumpb(body), status=status, content_type="application/json")


def _check_data(request: web.Request, data: Any) -> None:
    op = operation_of(request.match_info.handler)
    if op is not None and op.raw is None:
        contract.check("HTTP data of", f"{request.method} {request.path}", op.data, data)


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
                if "Allow" in exc.headers:  # 405: the methods the route has
                    resp.headers["Allow"] = exc.headers["Allow"]
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


def query(request: web.Request, model: type[M]) -> M:
    """The query string validated with `model` (its declared `query` in `@operation`)."""
    return validate(model, dict(request.query), "query")


def path_params(request: web.Request, model: type[M]) -> M:
    """The path parameters validated with `model` (its declared `path`)."""
    return validate(model, dict(request.match_info), "path")


async def read_body(request: web.Request, model: type[M], *, required: bool = True) -> M:
    """The JSON body validated with `model` (its declared `body`); an absent body is `{}`
    when not `required`."""
    if not required and not request.can_read_body:
        return validate(model, {}, "body")
    return validate(model, await read_json(request), "body", object_only=True)


# -- models of the core routes ----------------------------------------------------------------


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _iso_datetime(value: Any) -> Any:
    if not (isinstance(value, str) and _ISO_DATETIME.match(value)):
        raise ValueError("an ISO 8601 date and time, e.g. 2026-12-07T09:00:00Z")
    return value


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
#: a query parameter that is a date and time (not a unix number, as pydantic would also take)
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_datetime)]


class Published(BaseModel):
    id: str = Field(description="the event's id (a retry with its Idempotency-Key gets it again)")
    duplicate: bool


class EventTypeInfo(BaseModel):
    schema_: dict[str, Any] = Field(alias="schema")
    example: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"]
    uptime_s: float


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, bool] = Field(description="storage, bus, redis (when used), accepting")


class DlqQuery(Query):
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class DeadLetter(BaseModel):
    id: str
    consumer: str | None
    event: Any
    error: str | None
    attempts: int
    failed_at: str | None = None


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=1000)] | None = None


class Replayed(BaseModel):
    replayed: int


class AuditQuery(Query):
    actor: Annotated[str, Field(max_length=200, description="actor_id equals")] | None = None
    target: Annotated[str, Field(max_length=200, description="e.g. user:u_1")] | None = None
    action: Annotated[str, Field(max_length=100, description="e.g. chat.ban")] | None = None
    since: IsoDatetime | None = Field(None, description="ISO 8601: entries at or after it")
    before_id: Annotated[int, Field(ge=1, le=2**62, description="page: smaller ids")] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class AuditEntry(BaseModel):
    id: int
    at: str
    actor_id: str
    actor_role: str
    action: str
    target: str | None
    reason: str | None
    details: dict[str, Any]


class ClusterStatus(BaseModel):
    nodes: list[dict[str, Any]] = Field(description="each node's heartbeat: id, state, stats")
    totals: dict[str, Any]
    bus: dict[str, Any] = Field(description="backend, groups (lag, pending), dead_letters")
    scheduler: dict[str, Any]
    postgres: dict[str, Any]
    redis: dict[str, Any] | None


# -- routes -----------------------------------------------------------------------------------


@operation(
    "Publish a domain event to the bus",
    Published,
    status=202,
    security=("apiKey",),
    body=EventInBody,
    headers=(
        Header(
            "Idempotency-Key",
            "a retry with the same key is a no-op",
            {"type": "string", "minLength": 1, "maxLength": 200},
        ),
    ),
    errors=(Code.BAD_REQUEST, Code.UNAUTHORIZED),
    error_headers=(
        (
            503,
            Header(
                "Retry-After",
                "seconds to wait before publishing again: fan-out is past its capacity (its "
                "sockets' buffers are full, or it delivers later than OURS_FANOUT_MAX_DELAY_S "
                "after publish) or a dependency does not answer; nothing was published",
                {"type": "integer", "minimum": 1},
                required=True,
            ),
        ),
    ),
    example={"id": "0193e1c2-7a4f-7c1e-9b1a-2f3d4e5f6a7b", "duplicate": False},
)
async def post_event(request: web.Request) -> web.Response:
    """Accepted means durable: the event is in the bus before the answer (202). 503 with
    Retry-After, at once, while fan-out is past its capacity (admission control: what is
    accepted is delivered in time, the excess is refused rather than queued)."""
    key_id = require_api_key(request)
    raw = await read_json(request)
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not 0 < len(idem) <= 200:
        raise ApiError(Code.BAD_REQUEST, "Idempotency-Key must be 1-200 characters")
    event = build_event(raw, idempotency_key=idem, scope=key_id)
    node = request.app[NODE]
    if node.backlog > node.settings.max_backlog:
        reason: str | None = f"fan-out is {node.backlog} events behind; retry shortly"
    else:
        reason = node.fanout.refusal()
    if reason:
        metrics.EVENTS_REFUSED.inc()
        err = ApiError(Code.UNAVAILABLE, reason, {"retry_after": FANOUT_RETRY_AFTER_S})
        return error_response(request, err, {"Retry-After": str(FANOUT_RETRY_AFTER_S)})
    new = await node.bus.publish(event)
    metrics.EVENTS_PUBLISHED.labels(event.type, "new" if new else "duplicate").inc()
    logs.event_id.set(event.id)
    log.info("event published", extra={"type": event.type, "duplicate": not new})
    return envelope(request, {"id": event.id, "duplicate": not new}, status=202)


@operation("Every event type with its payload JSON Schema and an example", dict[str, EventTypeInfo])
async def event_types(request: web.Request) -> web.Response:
    return envelope(request, schemas())


@operation("Liveness: the process answers", Health)
async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return envelope(request, {"status": "ok", "uptime_s": round(time.time() - node.started_at, 1)})


@operation(
    "Readiness: storage and bus reachable (503 with the same data and an error when not)",
    Ready,
    errors=(Code.UNAVAILABLE,),
)
async def ready(request: web.Request) -> web.Response:
    node = request.app[NODE]
    checks = {"storage": await node.storage.ping(), "bus": await node.bus.ping()}
    if node.redis is not None:  # the shared client: room logs, presence, limits, counters
        try:
            checks["redis"] = bool(await node.redis.ping())
        except REDIS_ERRORS:
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


@operation(
    "Prometheus metrics",
    None,
    raw=("text/plain", {"type": "string", "description": "Prometheus text exposition format"}),
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(metrics.REGISTRY))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@operation(
    "This document (OpenAPI 3.1)",
    None,
    raw=("application/json", {"type": "object", "description": "an OpenAPI 3.1 document"}),
)
async def openapi(request: web.Request) -> web.Response:
    return _document(request, "openapi", lambda: openapi_document(request.app))


@operation(
    "The Socket.IO API (AsyncAPI 3.0): namespaces, client events with their acks, server events",
    None,
    raw=("application/json", {"type": "object", "description": "an AsyncAPI 3.0 document"}),
)
async def asyncapi(request: web.Request) -> web.Response:
    namespaces = request.app[NODE].namespaces
    return _document(
        request,
        "asyncapi",
        lambda: asyncapi_document({p: type(ns) for p, ns in namespaces.items()}),
    )


def _document(request: web.Request, name: str, build: Callable[[], dict[str, Any]]) -> web.Response:
    """One of the documents, built on its first request and kept (routes are final by then)."""
    built = request.app[DOCUMENTS]
    if name not in built:
        built[name] = build()
    return web.json_response(built[name], dumps=jsonutil.dumps)


@operation(
    "List dead letters, oldest first",
    list[DeadLetter],
    security=ADMIN,
    query=DlqQuery,
    errors=(Code.FORBIDDEN,),
)
async def dlq_list(request: web.Request) -> web.Response:
    require_admin(request)
    q = query(request, DlqQuery)
    return envelope(request, await request.app[NODE].bus.dead_letters(q.limit))


@operation(
    "Replay dead letters: all, or body {ids: [...]}",
    Replayed,
    security=ADMIN,
    body=ReplayRequest,
    body_required=False,
    errors=(Code.FORBIDDEN,),
)
async def dlq_replay(request: web.Request) -> web.Response:
    actor = require_admin(request)
    ids = (await read_body(request, ReplayRequest, required=False)).ids
    node = request.app[NODE]
    count = await node.bus.replay(ids)
    await node.audit.record(actor, "dlq.replay", None, None, {"ids": ids, "count": count})
    log.warning("dead letters replayed", extra={"actor": actor, "count": count})
    return envelope(request, {"replayed": count})


@operation(
    "The audit log, newest first (admin and moderator actions, erasures, replays)",
    list[AuditEntry],
    security=ADMIN,
    query=AuditQuery,
    errors=(Code.FORBIDDEN,),
)
async def audit_list(request: web.Request) -> web.Response:
    require_admin(request)
    q = query(request, AuditQuery)
    rows = await request.app[NODE].audit.query(
        actor=q.actor,
        target=q.target,
        action=q.action,
        since=q.since,
        before_id=q.before_id,
        limit=q.limit,
    )
    return envelope(request, rows)


@operation(
    "The cluster at a glance: every node's heartbeat with totals, the bus per consumer group,"
    " dead letters, the scheduler's backlog, PostgreSQL and Redis reachability",
    ClusterStatus,
    security=ADMIN,
    errors=(Code.FORBIDDEN,),
)
async def cluster_status(request: web.Request) -> web.Response:
    require_admin(request)
    return envelope(request, await cluster.gather(request.app[NODE]))


def add_routes(app: web.Application) -> None:
    app[DOCUMENTS] = {}
    app.router.add_get("/v1/admin/audit", audit_list)
    app.router.add_get("/v1/admin/cluster", cluster_status)
    app.router.add_post("/v1/events", post_event)
    app.router.add_get("/v1/events/types", event_types)
    app.router.add_get("/v1/admin/dlq", dlq_list)
    app.router.add_post("/v1/admin/dlq/replay", dlq_replay)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/v1/asyncapi.json", asyncapi)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
