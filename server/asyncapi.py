"""The AsyncAPI 3.0 document of the Socket.IO API, built from the code: every namespace as a
channel, every client event its handlers declare (`@handles`: payload model, ack type, error
codes, example), every server-to-client event (`server_event(...)` and the domain events of
server/events.py), the connect `auth` payload and `connect_error` data, and the recovery
handshake. Served at GET /v1/asyncapi.json.

The document describes the server: it *receives* client events (each with a reply: the ack)
and *sends* server events. Socket.IO names such as `room:join` are message `name`s; the keys
of the document use dots, as AsyncAPI keys may not hold a colon, under a prefix that keeps
apart the names that are both: `client.message.read` (a client event), `client.message.read.ack`
(its ack), `server.message.read` (a server event), `event.message.read` (a domain event).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.events import EVENT_TYPES, EXAMPLES
from server.openapi import ERROR_SCHEMA, json_schemas
from server.server_events import server_events
from server.sockets import COMMON_ERRORS, Namespace, Undocumented


class ConnectAuth(BaseModel):
    """The `auth` payload of the Socket.IO CONNECT packet, on every namespace."""

    token: str = Field(description="the user's JWT; verified on every connect")
    recover: dict[str, str] | None = Field(
        None,
        description="connection state recovery: {room: offset} of the last event seen in each"
        " room (its `meta.offsets`); the missed events are replayed, then `session:recovered`"
        " says how it went. At most 200 rooms.",
    )


class ConnectErrorData(BaseModel):
    """`connect_error`'s `err.data` when the server refuses a connect."""

    code: Literal["unauthorized", "token_expired", "rate_limited", "unavailable"]
    message: str
    details: Any = None
    retry_after: float | None = None


class Meta(BaseModel):
    """The second argument of a room event: where it is in its room's log."""

    offsets: dict[str, str] = Field(
        description="{room: offset}: keep the newest per room, send it in `auth.recover` or"
        " `room:join {since}` after a reconnect"
    )


class DomainEvent(BaseModel):
    """A domain event as clients get it (the bus envelope); `payload` per `type`."""

    id: str
    type: str
    actor: str | None
    subjects: list[str]
    payload: dict[str, Any]
    ts: str = Field(description="ISO 8601, when it was published")


def _key(name: str) -> str:
    return name.replace(":", ".")


def _channel_id(path: str) -> str:
    return path.strip("/")


def asyncapi_document(namespaces: dict[str, type[Namespace]]) -> dict[str, Any]:
    """The whole document for the namespaces by path (`namespaces.NAMESPACES`)."""
    from server.fanout import namespace_for

    wanted: list[tuple[Any, Any, Any]] = [
        ("auth", "validation", ConnectAuth),
        ("connect_error", "serialization", ConnectErrorData),
        ("meta", "serialization", Meta),
    ]
    for path, cls in namespaces.items():
        for name, ce in cls.client_events().items():
            wanted.append(((path, name, "payload"), "validation", ce.model))
            if ce.ack is not Undocumented:
                wanted.append(((path, name, "ack"), "serialization", ce.ack))
    sent = server_events()
    for name, se in sent.items():
        wanted.append(((name, "event"), "serialization", se.payload))
    for etype, model in EVENT_TYPES.items():
        wanted.append(((etype, "domain"), "validation", model))
    refs, schemas = json_schemas(wanted)
    schemas["Error"] = ERROR_SCHEMA

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    def add(channel: str, key: str, message: dict[str, Any]) -> dict[str, str]:
        if f"{channel}.{key}" in messages:
            raise ValueError(f"two messages named {channel}.{key} in the AsyncAPI document")
        messages[f"{channel}.{key}"] = message
        channels[channel]["messages"][key] = {"$ref": f"#/components/messages/{channel}.{key}"}
        return {"$ref": f"#/channels/{channel}/messages/{key}"}

    for path, cls in namespaces.items():
        ch = _channel_id(path)
        channels[ch] = {
            "address": path,
            "title": path,
            "description": (cls.__doc__ or path).strip().split("\n\n")[0],
            "messages": {},
        }
        connect = add(
            ch,
            "connect",
            {
                "name": "connect",
                "title": "CONNECT (auth)",
                "summary": "Connect to the namespace: `io(url + '" + path + "', {auth})`",
                "payload": refs["auth"],
            },
        )
        refused = add(
            ch,
            "connect_error",
            {
                "name": "connect_error",
                "title": "connect_error",
                "summary": "The connect was refused: `err.message`, and `err.data` as here",
                "payload": refs["connect_error"],
            },
        )
        operations[f"{ch}.connect"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{ch}"},
            "summary": "Connect with a token (and optionally the rooms to recover)",
            "security": [{"$ref": "#/components/securitySchemes/userJwt"}],
            "messages": [connect],
            "reply": {"channel": {"$ref": f"#/channels/{ch}"}, "messages": [refused]},
        }
        for name, ce in cls.client_events().items():
            key = "client." + _key(name)
            codes = list(dict.fromkeys(c.value for c in (*ce.errors, *COMMON_ERRORS)))
            request: dict[str, Any] = {
                "name": name,
                "title": name,
                "summary": ce.summary or name,
                "payload": refs[path, name, "payload"],
            }
            if ce.example is not None:
                request["examples"] = [{"name": "example", "payload": ce.example}]
            ack_data = (
                refs[path, name, "ack"] if ce.ack is not Undocumented else {"description": "?"}
            )
            ack = {
                "name": f"{name} ack",
                "title": f"{name} ack",
                "summary": f"The ack of {name}: `{{ok: true, data}}` or `{{ok: false, error}}`",
                "payload": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["ok", "data"],
                            "properties": {"ok": {"const": True}, "data": ack_data},
                        },
                        {
                            "type": "object",
                            "required": ["ok", "error"],
                            "properties": {
                                "ok": {"const": False},
                                "error": {
                                    "allOf": [
                                        {"$ref": "#/components/schemas/Error"},
                                        {"properties": {"code": {"enum": codes}}},
                                    ]
                                },
                            },
                        },
                    ]
                },
                "x-error-codes": codes,
            }
            operations[f"{ch}.{key}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{ch}"},
                "summary": ce.summary or name,
                "messages": [add(ch, key, request)],
                "reply": {
                    "channel": {"$ref": f"#/channels/{ch}"},
                    "messages": [add(ch, f"{key}.ack", ack)],
                },
            }
    for name, se in sent.items():
        for path in se.namespaces:
            ch = _channel_id(path)
            if ch not in channels:
                continue
            message: dict[str, Any] = {
                "name": name,
                "title": name,
                "summary": se.summary,
                "payload": refs[name, "event"],
                "headers": refs["meta"],
            }
            if se.example is not None:
                message["examples"] = [{"name": "example", "payload": se.example}]
            key = "server." + _key(name)
            operations[f"{ch}.{key}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{ch}"},
                "summary": se.summary,
                "messages": [add(ch, key, message)],
            }
    envelope = json_schemas([("e", "serialization", DomainEvent)])
    schemas.update(envelope[1])
    for etype, _model in EVENT_TYPES.items():
        ch = _channel_id(namespace_for(etype))
        if ch not in channels:
            continue
        payload = {
            "allOf": [
                envelope[0]["e"],
                {
                    "properties": {
                        "type": {"const": etype},
                        "payload": refs[etype, "domain"],
                    }
                },
            ]
        }
        example = EXAMPLES.get(etype)
        message = {
            "name": etype,
            "title": etype,
            "summary": f"The domain event {etype}, fanned out to the rooms in its `subjects`",
            "payload": payload,
            "headers": refs["meta"],
        }
        if example is not None:
            message["examples"] = [
                {
                    "name": "example",
                    "payload": {
                        "id": "0193e1c2-7a4f-7c1e-9b1a-2f3d4e5f6a7b",
                        "type": etype,
                        "actor": None,
                        "ts": "2026-12-07T10:00:00+00:00",
                        **example,
                    },
                }
            ]
        operations[f"{ch}.event.{etype}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{ch}"},
            "summary": message["summary"],
            "messages": [add(ch, f"event.{etype}", message)],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "OURS comms — Socket.IO API",
            "version": "1",
            "description": (
                "Socket.IO v5 (Engine.IO 4) over WebSocket or long-polling at `/socket.io/`."
                " Each channel is a namespace. A client event is emitted with an ack callback"
                " and answered `{ok: true, data}` or `{ok: false, error: {code, message,"
                " details?}}`; error codes are the same as the HTTP API's. Connect with"
                " `auth: {token}`; after a reconnect, `auth.recover` ({room: offset}) replays"
                " what was missed and `session:recovered` reports each room. The prose around"
                " this document is docs/protocol.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "ours": {
                "host": "localhost:8080",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "the node you run (`scripts/serve`); Socket.IO v5",
                "security": [{"$ref": "#/components/securitySchemes/userJwt"}],
            }
        },
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {
            "schemas": schemas,
            "messages": dict(sorted(messages.items())),
            "securitySchemes": {
                "userJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "the user's JWT, sent as `auth.token` in the CONNECT packet",
                }
            },
        },
    }
