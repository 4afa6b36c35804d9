"""The OpenAPI 3.1 document of the HTTP API, built from the code: every route the aiohttp app
registers whose handler is declared with `@operation(...)`, with the pydantic models the handler
validates with (query, path, body) and the type of the envelope's `data` it answers with.

A route without a declaration is left out of the document — and tests/test_contract_http.py
fails, so the document cannot silently miss a route. Security names are the schemes the
handler really checks (`server.http_api.require_*`, the provider signatures of the webhooks).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from server.errors import HTTP_STATUS, Code

F = TypeVar("F", bound=Callable[..., Any])

#: every security scheme a route can name, as OpenAPI security schemes
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "a platform API key (OURS_API_KEYS): the platform's backend",
    },
    "userJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "a user's token (HS256 or RS256, `sub` is the user id)",
    },
    "adminJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "a user's token whose `role` is `admin`",
    },
    "livekitSignature": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "LiveKit's webhook token: a JWT signed with the API secret whose "
        "`sha256` claim is the body's hash (`Authorization`)",
    },
    "cloudflareSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Webhook-Signature",
        "description": "Cloudflare Stream's `time=<unix>,sig1=<hex HMAC-SHA256>` of the body",
    },
    "telegramSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Telegram-Bot-Api-Secret-Token",
        "description": "the secret token given to setWebhook (OURS_TELEGRAM_WEBHOOK_SECRET)",
    },
}

#: the codes any route can answer besides its own (limits, a dependency down, a bug)
COMMON_ERRORS = (Code.RATE_LIMITED, Code.UNAVAILABLE, Code.INTERNAL)


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers; read by `openapi_document`."""

    summary: str
    data: Any  # the type of the envelope's `data` on success (None: `data` is null)
    status: int = 200
    security: tuple[str, ...] = ()  # any one of these schemes; () is public
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    body: Any = None  # a pydantic model, or a type (a discriminated union)
    body_required: bool = True
    body_media: tuple[str, ...] = ("application/json",)  # the media types the body comes as
    headers: tuple[Header, ...] = ()
    errors: tuple[Code, ...] = ()
    #: headers an error answer carries, by status (e.g. Retry-After on a 503)
    error_headers: tuple[tuple[int, Header], ...] = ()
    description: str | None = None
    tags: tuple[str, ...] = ()
    #: a response that is not the JSON envelope: (media type, schema), e.g. the metrics text
    raw: tuple[str, dict[str, Any]] | None = None
    example: Any = None  # an example of `data`


def operation(summary: str, data: Any, **kw: Any) -> Callable[[F], F]:
    """Declare a route handler's contract (see `Operation`); the handler must validate with
    the same models it declares (`server.http_api.query`, `read_body`)."""
    op = Operation(summary=summary, data=data, **kw)
    for name in op.security:
        if name not in SECURITY_SCHEMES:
            raise ValueError(f"unknown security scheme {name!r}")

    def mark(fn: F) -> F:
        fn.__ours_op__ = op  # type: ignore[attr-defined]
        return fn

    return mark


def operation_of(handler: Any) -> Operation | None:
    op = getattr(handler, "__ours_op__", None)
    return op if isinstance(op, Operation) else None


#: routes that are not part of the HTTP API: the Socket.IO transport (see /v1/asyncapi.json)
#: and the console's static files
NOT_API = ("/socket.io", "/console/static")


def api_routes(app: web.Application) -> Iterable[tuple[str, str, Any]]:
    """(method, path, handler) of every route the app serves that belongs in the document."""
    for route in app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        if route.method == "HEAD" or path.startswith(NOT_API):
            continue
        yield route.method.lower(), path, route.handler


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "enum": [c.value for c in Code]},
        "message": {"type": "string"},
        "details": {},
        "retry_after": {"type": "number"},
    },
}

_PATH_PARAM = re.compile(r"\{(\w+)\}")


def _envelope(data_schema: dict[str, Any], success: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "data", "errors", "meta"],
        "properties": {
            "success": {"const": success},
            "data": data_schema if success else {"type": "null"},
            "errors": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Error"},
                **({"maxItems": 0} if success else {"minItems": 1}),
            },
            "meta": {
                "type": "object",
                "properties": {"requestId": {"type": ["string", "null"]}},
            },
        },
    }


def json_schemas(
    wanted: list[tuple[Any, JsonSchemaMode, Any]],
) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of many types at once, by key, sharing `#/components/schemas` (pydantic
    names colliding models apart); also used for /v1/asyncapi.json."""
    adapters = [(key, mode, TypeAdapter(type(None) if t is None else t)) for key, mode, t in wanted]
    refs, defs = TypeAdapter.json_schemas(adapters, ref_template="#/components/schemas/{model}")
    return {key: schema for (key, _mode), schema in refs.items()}, defs.get("$defs", {})


def _model_params(model: type[BaseModel], where: str, schemas: dict[str, Any]) -> list[Any]:
    params = []
    required = set(schemas.get("required", []))
    for name, prop in schemas.get("properties", {}).items():
        param: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
        }
        described = model.model_fields.get(name)
        if described is not None and described.description:
            param["description"] = described.description
        params.append(param)
    return params


def _error_responses(op: Operation) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in (*op.errors, *COMMON_ERRORS):
        by_status.setdefault(HTTP_STATUS[code], [])
        if code.value not in by_status[HTTP_STATUS[code]]:
            by_status[HTTP_STATUS[code]].append(code.value)
    if op.body is not None or op.query is not None or op.path is not None:
        by_status.setdefault(400, [])
        if "bad_request" not in by_status[400]:
            by_status[400].append("bad_request")
    if op.body is not None:
        by_status.setdefault(413, ["payload_too_large"])
    if op.security:
        by_status.setdefault(401, [])
        for name in ("unauthorized", "token_expired"):
            if name not in by_status[401]:
                by_status[401].append(name)
    out: dict[str, Any] = {}
    for status, codes in sorted(by_status.items()):
        out[str(status)] = {
            "description": "error: " + ", ".join(f"`{c}`" for c in codes),
            "content": {"application/json": {"schema": _envelope({}, success=False)}},
        }
        headers = {
            h.name: {"description": h.description, "required": h.required, "schema": h.schema}
            for at, h in op.error_headers
            if at == status
        }
        if headers:
            out[str(status)]["headers"] = headers
    return out


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The whole document, from the routes `app` registers."""
    declared: list[tuple[str, str, Any, Operation]] = []
    for method, path, handler in api_routes(app):
        op = operation_of(handler)
        if op is not None:
            declared.append((method, path, handler, op))
    wanted: list[tuple[Any, JsonSchemaMode, Any]] = []
    for method, path, _h, op in declared:
        wanted.append(((method, path, "data"), "serialization", op.data))
        for part in ("query", "path", "body"):
            model = getattr(op, part)
            if model is not None:
                wanted.append(((method, path, part), "validation", model))
    refs, components = json_schemas(wanted)
    components["Error"] = ERROR_SCHEMA

    paths: dict[str, Any] = {}
    for method, path, handler, op in declared:
        params: list[dict[str, Any]] = []
        if op.path is not None:
            params += _model_params(
                op.path, "path", _resolve(refs[method, path, "path"], components)
            )
        else:
            params += [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in _PATH_PARAM.findall(path)
            ]
        if op.query is not None:
            params += _model_params(
                op.query, "query", _resolve(refs[method, path, "query"], components)
            )
        params += [
            {
                "name": h.name,
                "in": "header",
                "required": h.required,
                "schema": h.schema,
                "description": h.description,
            }
            for h in op.headers
        ]
        entry: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": op.summary,
            "tags": list(op.tags) or [path.split("/")[2] if path.startswith("/v1/") else "ops"],
        }
        description = op.description or inspect.getdoc(handler)
        if description:
            entry["description"] = description
        if params:
            entry["parameters"] = params
        entry["security"] = [{name: []} for name in op.security]
        if op.body is not None:
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {m: {"schema": refs[method, path, "body"]} for m in op.body_media},
            }
        if op.raw is not None:
            media_type, schema = op.raw
            success: dict[str, Any] = {
                "description": op.summary,
                "content": {media_type: {"schema": schema}},
            }
        else:
            content: dict[str, Any] = {"schema": _envelope(refs[method, path, "data"], True)}
            if op.example is not None:
                content["example"] = {
                    "success": True,
                    "data": op.example,
                    "errors": [],
                    "meta": {"requestId": "4f1c…"},
                }
            success = {"description": op.summary, "content": {"application/json": content}}
        entry["responses"] = {str(op.status): success, **_error_responses(op)}
        paths.setdefault(path, {})[method] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OURS comms",
            "version": "1",
            "description": "HTTP API of the OURS real-time server. Every answer is the "
            "envelope {success, data, errors, meta}. The Socket.IO protocol is "
            "/v1/asyncapi.json; the prose around both is docs/protocol.md.",
        },
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": components},
        "paths": dict(sorted(paths.items())),
    }


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return components[ref.rsplit("/", 1)[1]]
    return schema
