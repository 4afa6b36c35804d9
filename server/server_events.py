"""The events the server sends to clients, declared where they are sent: name, namespaces,
payload type. `/v1/asyncapi.json` documents them (server/asyncapi.py); domain events
(`content.created`, ...) are declared by their payload models in server/events.py.

A feature declares its events at import (`STAGE_UPDATE = server_event("stage:update", ...)`)
and sends with the returned name. Fan-out checks every name it sends (`check_emitted`): one
that is not declared is logged as an error and remembered, and the test suite fails on it
(tests/conftest.py), so the document cannot silently miss an event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from server import contract
from server.events import EVENT_TYPES

log = logging.getLogger("ours.contract")


@dataclass(frozen=True)
class ServerEvent:
    name: str
    payload: Any  # a pydantic model or type of the event's first argument
    namespaces: tuple[str, ...]
    summary: str
    example: Any = None


_DECLARED: dict[str, ServerEvent] = {}
#: names sent that were never declared (the suite fails when this is not empty)
UNDECLARED: set[str] = set()
#: names a test sends through fan-out on purpose (probes no client is written against)
PROBES: set[str] = set()


def server_event(
    name: str, payload: Any, *, namespaces: tuple[str, ...], summary: str, example: Any = None
) -> str:
    """Declare a server-to-client event; returns its name, to send with."""
    known = _DECLARED.get(name)
    event = ServerEvent(name, payload, tuple(namespaces), summary, example)
    if known is not None and known != event:
        raise ValueError(f"server event {name!r} declared twice, differently")
    _DECLARED[name] = event
    return name


def server_events() -> dict[str, ServerEvent]:
    return dict(sorted(_DECLARED.items()))


def check_emitted(name: str, data: Any = None) -> None:
    """Called for every event fan-out sends: an undeclared one is a contract bug; with
    contract checking on, its payload is checked against the declared type."""
    declared = _DECLARED.get(name)
    if declared is not None:
        if contract.ENABLED:
            contract.check("server event", name, declared.payload, data)
        return
    if name in EVENT_TYPES or name in UNDECLARED or name in PROBES:
        return
    UNDECLARED.add(name)
    log.error(
        "server event sent but not declared; declare it with server_event()",
        extra={"event": name},
    )


# -- the events of every namespace --------------------------------------------------------

ALL_NAMESPACES = ("/feed", "/live", "/notifications", "/messages", "/presence")


class RoomRecovery(BaseModel):
    """How the replay of one room went (in `session:recovered` and `room:join {since}`)."""

    recovered: bool = Field(description="false: the gap was not in the log; refetch state")
    replayed: int | None = None
    offset: str | None = Field(None, description="the room's newest offset")
    reason: str | None = Field(None, description="why not: forbidden, expired, unknown, ...")


class Recovered(BaseModel):
    """`session:recovered`: after connecting with `auth.recover`, each room's replay."""

    recovered: bool = Field(description="true when every room's gap was replayed")
    rooms: dict[str, RoomRecovery]


class ServerDisconnect(BaseModel):
    """`server:disconnect`: the server is about to close this socket, and why."""

    code: str = Field(description="token_expired, forbidden (banned, removed), erased, ...")
    message: str


class ServerShutdown(BaseModel):
    """`server:shutdown`: this node is restarting; reconnect (to another node)."""

    reason: str
    reconnect: bool


SESSION_RECOVERED = server_event(
    "session:recovered",
    Recovered,
    namespaces=ALL_NAMESPACES,
    summary="After a connect with `auth.recover`: how each room's replay went (the replayed"
    " events arrive before it)",
    example={"recovered": True, "rooms": {"zone:music": {"recovered": True, "replayed": 2}}},
)
SERVER_DISCONNECT = server_event(
    "server:disconnect",
    ServerDisconnect,
    namespaces=ALL_NAMESPACES,
    summary="The server closes this socket next, and says why (token expired, banned, ...)",
    example={"code": "token_expired", "message": "token expired; reconnect with a fresh one"},
)
SERVER_SHUTDOWN = server_event(
    "server:shutdown",
    ServerShutdown,
    namespaces=ALL_NAMESPACES,
    summary="This node is draining: reconnect (the load balancer sends you to another)",
    example={"reason": "server restarting", "reconnect": True},
)
