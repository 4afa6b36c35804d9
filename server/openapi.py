"""The OpenAPI 3.1 document served at GET /v1/openapi.json (kept beside docs/protocol.md)."""

from __future__ import annotations

from functools import cache
from typing import Any

from server.events import EVENT_TYPES, EventIn

ENVELOPE = {
    "type": "object",
    "required": ["success", "data", "errors", "meta"],
    "properties": {
        "success": {"type": "boolean"},
        "data": {},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Error"}},
        "meta": {"type": "object", "properties": {"requestId": {"type": "string"}}},
    },
}

ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {
            "type": "string",
            "enum": [
                "bad_request",
                "unauthorized",
                "token_expired",
                "forbidden",
                "not_found",
                "conflict",
                "rate_limited",
                "payload_too_large",
                "unknown_event",
                "unavailable",
                "internal",
            ],
        },
        "message": {"type": "string"},
        "details": {},
    },
}


def _resp(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "bad request (field errors in errors[].details)",
        401: "missing or invalid credential",
        403: "forbidden",
        413: "body too large",
        503: "a dependency is down",
    }
    return {str(c): _resp(names[c]) for c in codes}


@cache
def openapi_document() -> dict[str, Any]:
    event_in = EventIn.model_json_schema()
    payloads = {
        name: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, model in EVENT_TYPES.items()
    }
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OURS comms",
            "version": "1",
            "description": "HTTP API of the OURS real-time server. The Socket.IO protocol is "
            "documented in docs/protocol.md.",
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "platform API key"},
                "userJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {"Envelope": ENVELOPE, "Error": ERROR, "EventIn": event_in},
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Publish a domain event to the bus",
                    "security": api_key,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 200},
                            "description": "a retry with the same key is a no-op",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/EventIn"}}
                        },
                    },
                    "responses": {
                        "202": _resp("accepted and durable: data {id, duplicate}"),
                        **_errors(400, 401, 413),
                    },
                }
            },
            "/v1/events/types": {
                "get": {
                    "summary": "Every event type with its payload JSON Schema and an example",
                    "responses": {"200": _resp("data: {type: {schema, example}}")},
                    "x-payload-schemas": payloads,
                }
            },
            "/v1/admin/dlq": {
                "get": {
                    "summary": "List dead letters",
                    "security": [*api_key, {"userJwt": []}],
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
                    "responses": {"200": _resp("data: [dead letter]"), **_errors(401, 403)},
                }
            },
            "/v1/admin/cluster": {
                "get": {
                    "summary": "The cluster at a glance: every node's heartbeat (up, gone, "
                    "stopped) with totals, the bus per consumer group (lag, pending), dead "
                    "letters, the scheduler's backlog, PostgreSQL and Redis reachability",
                    "security": [*api_key, {"userJwt": []}],
                    "responses": {
                        "200": _resp("data: {nodes, totals, bus, scheduler, postgres, redis}"),
                        **_errors(401, 403),
                    },
                }
            },
            "/v1/admin/dlq/replay": {
                "post": {
                    "summary": "Replay dead letters (all, or body {ids: [...]})",
                    "security": [*api_key, {"userJwt": []}],
                    "responses": {"200": _resp("data: {replayed}"), **_errors(400, 401, 403)},
                }
            },
            "/v1/admin/audit": {
                "get": {
                    "summary": "The audit log, newest first (admin/moderator actions, erasures)",
                    "security": [*api_key, {"userJwt": []}],
                    "parameters": [
                        {"name": n, "in": "query", "schema": {"type": t}, "description": d}
                        for n, t, d in (
                            ("actor", "string", "actor_id equals (a user id, cli, key0)"),
                            ("target", "string", "target equals, e.g. user:u_1 or audio:a_1"),
                            ("action", "string", "e.g. chat.ban, audio.mute, privacy.erase"),
                            ("since", "string", "ISO 8601 time: entries at or after it"),
                            ("before_id", "integer", "page: entries with a smaller id"),
                            ("limit", "integer", "1-500, default 100"),
                        )
                    ],
                    "responses": {
                        "200": _resp(
                            "data: [{id, at, actor_id, actor_role, action, target, reason,"
                            " details}]"
                        ),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/me/export": {
                "get": {
                    "summary": "Everything this server holds about the caller, as one JSON"
                    " document (docs/protocol.md, A user's data, lists the sections); audited",
                    "security": [{"userJwt": []}],
                    "responses": {"200": _resp("data: the archive"), **_errors(401)},
                }
            },
            "/v1/me": {
                "delete": {
                    "summary": "Erase the caller's data in one transaction (rows removed or"
                    " anonymized), their Redis keys, and close their sockets; audited",
                    "security": [{"userJwt": []}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"reason": {"type": "string", "maxLength": 500}},
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _resp("data: {erased, pseudonym, rows: {table: count}}"),
                        **_errors(400, 401),
                    },
                }
            },
            "/v1/admin/users/{user_id}": {
                "delete": {
                    "summary": "Erase a user (as DELETE /v1/me); body {reason} optional",
                    "security": [*api_key, {"userJwt": []}],
                    "parameters": [
                        {
                            "name": "user_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _resp("data: {erased, pseudonym, rows}"),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/health": {"get": {"summary": "Liveness", "responses": {"200": _resp("ok")}}},
            "/ready": {
                "get": {
                    "summary": "Readiness: storage and bus reachable",
                    "responses": {"200": _resp("ready"), **_errors(503)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "it"}}}
            },
        },
    }
