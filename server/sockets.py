"""What every namespace shares: token check on connect, the user room, and one dispatcher that
validates each client event and answers with the project's ack convention.

A handler is a method decorated with ``@handles("noun:verb", Model, ack=Type, ...)``; it receives
the socket id, the verified principal and the validated payload, and returns the ack's ``data``
(of type `ack`) or raises ApiError. Unknown events, malformed or oversize payloads get an error
ack and a log line; the connection keeps working. The declarations are the contract:
`/v1/asyncapi.json` (server/asyncapi.py) is built from them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import socketio
from pydantic import BaseModel, Field

from server import contract, jsonutil, logs, metrics
from server.auth import Principal
from server.errors import ApiError, Code, fail, ok, refusal_for_outage, validate
from server.rooms import check_client_join, user_room
from server.server_events import SERVER_DISCONNECT, SESSION_RECOVERED

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.socket")

HandlerFn = Callable[..., Awaitable[Any]]
_background: set[asyncio.Task[None]] = set()
MAX_RECOVER_ROOMS = 200


def client_ip(environ: dict[str, Any], trust_forwarded: bool) -> str | None:
    if trust_forwarded:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[0].strip())[:64]
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None) or environ.get("REMOTE_ADDR")
    return str(remote) if remote else None


def _recover_request(auth: Any) -> dict[str, str] | str | None:
    """auth.recover = {room: offset}; None when absent, a reason string when malformed."""
    if not isinstance(auth, dict) or "recover" not in auth:
        return None
    wanted = auth["recover"]
    if not isinstance(wanted, dict) or len(wanted) > MAX_RECOVER_ROOMS:
        return f"recover must be an object of at most {MAX_RECOVER_ROOMS} room: offset pairs"
    if not all(
        isinstance(k, str) and isinstance(v, str) and len(v) < 80 for k, v in wanted.items()
    ):
        return "recover maps room names to offset strings"
    return dict(wanted)


class NoPayload(BaseModel):
    """An event that takes nothing: send no payload or `{}` (other fields are ignored)."""

    model_config = {"extra": "ignore"}


class Undocumented:
    """The `ack` of a handler whose ack is not declared yet (the contract test fails)."""


#: errors any client event can be answered with, besides its own
COMMON_ERRORS = (
    Code.BAD_REQUEST,
    Code.PAYLOAD_TOO_LARGE,
    Code.RATE_LIMITED,
    Code.UNAVAILABLE,
    Code.INTERNAL,
)


@dataclass(frozen=True)
class ClientEvent:
    """One client event of a namespace: its payload model, the type of its ack's `data`, the
    error codes of its own it can answer with (besides `COMMON_ERRORS`), and an example."""

    name: str
    attr: str
    model: type[BaseModel]
    ack: Any
    errors: tuple[Code, ...]
    example: dict[str, Any] | None
    summary: str


def handles(
    event: str,
    model: type[BaseModel] = NoPayload,
    *,
    ack: Any = Undocumented,
    errors: tuple[Code, ...] = (),
    example: dict[str, Any] | None = None,
) -> Callable[[HandlerFn], HandlerFn]:
    """Mark a namespace method as the handler of a client event: its payload model, the type
    of the ack's `data` (`None`: data is null), its own error codes, an example payload (when
    the model has required fields). The method's docstring is its summary."""

    def mark(fn: HandlerFn) -> HandlerFn:
        fn.__ours_event__ = ClientEvent(  # type: ignore[attr-defined]
            name=event,
            attr=fn.__name__,
            model=model,
            ack=ack,
            errors=errors,
            example=example,
            summary=(inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " "),
        )
        return fn

    return mark


class RoomRequest(BaseModel):
    model_config = {"extra": "forbid"}
    room: str


class JoinRequest(RoomRequest):
    since: str | None = None  # an offset from an earlier event's meta: replay what was missed


class RefreshRequest(BaseModel):
    model_config = {"extra": "forbid"}
    token: str


class Refreshed(BaseModel):
    expires_at: float | None = Field(description="the new token's `exp` (unix seconds)")


class Joined(BaseModel):
    room: str
    offset: str | None = Field(
        None, description="the room's newest offset (absent after a `since` replay)"
    )
    recovered: bool | None = Field(None, description="with `since`: the replay's outcome")
    replayed: int | None = None
    reason: str | None = None


class Left(BaseModel):
    room: str


class Namespace(socketio.AsyncNamespace):
    """Base of the five namespaces."""

    #: room kinds a client may join itself with room:join (besides its own user room)
    client_room_kinds: ClassVar[frozenset[str]] = frozenset()
    _handlers: ClassVar[dict[str, ClientEvent]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {}
        for klass in reversed(cls.__mro__):
            for fn in vars(klass).values():
                marker = getattr(fn, "__ours_event__", None)
                if isinstance(marker, ClientEvent):
                    cls._handlers[marker.name] = marker

    @classmethod
    def client_events(cls) -> dict[str, ClientEvent]:
        """Every client event this namespace handles, by name."""
        return dict(cls._handlers)

    def __init__(self, namespace: str, node: Node) -> None:
        super().__init__(namespace)
        self.node = node
        self.principals: dict[str, Principal] = {}
        self.ips: dict[str, str | None] = {}
        self.max_payload = node.settings.max_payload_bytes

    # -- lifecycle --------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.node.draining:
            raise socketio.exceptions.ConnectionRefusedError(
                "server is shutting down",
                {"code": Code.UNAVAILABLE.value, "message": "server is shutting down; reconnect"},
            )
        ip = client_ip(environ, self.node.settings.trust_forwarded_for)
        decision = await self.node.limits.check_connect(ip)
        if not decision.allowed:
            err = ApiError(
                Code.RATE_LIMITED,
                f"too many connection attempts; retry in {decision.retry_after:.1f}s",
                {"retry_after": round(decision.retry_after, 3)},
            )
            raise socketio.exceptions.ConnectionRefusedError(err.message, err.body())
        self.ips[sid] = ip
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = self.node.verifier.verify(token)
        except ApiError as err:
            log.info("connect refused", extra={"namespace": self.namespace, "code": err.code})
            raise socketio.exceptions.ConnectionRefusedError(err.message, err.body()) from None
        wanted = _recover_request(auth)
        self.principals[sid] = principal
        if wanted is not None:  # hold live room events until the replay is out
            self.node.fanout.manager.begin_recovery(self.namespace, sid)
        await self.enter_room(sid, user_room(principal.user_id))
        metrics.CONNECTIONS.labels(self.namespace).inc()
        await self.connected(sid, principal, auth if isinstance(auth, dict) else {})
        if wanted is not None:
            task = asyncio.create_task(self._recover_on_connect(sid, principal, wanted))
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _recover_on_connect(
        self, sid: str, principal: Principal, wanted: dict[str, str] | str
    ) -> None:
        """After the CONNECT packet is queued: replay each room, then say how it went."""
        manager = self.node.fanout.manager
        for _ in range(100):
            if manager.is_connected(sid, self.namespace):
                break
            await asyncio.sleep(0.01)
        else:
            manager.end_recovery(self.namespace, sid)
            return
        results: dict[str, Any] = {}
        allowed: dict[str, str] = {}
        if isinstance(wanted, str):  # malformed request: answer, do not guess
            results["*"] = {"recovered": False, "reason": wanted}
        else:
            for room, offset in wanted.items():
                if await self.may_enter(principal, room):
                    allowed[room] = offset
                else:
                    results[room] = {"recovered": False, "reason": "forbidden"}
        try:
            results.update(await self.node.fanout.recover(sid, self.namespace, allowed))
        finally:
            manager.end_recovery(self.namespace, sid)
        await manager.send_to(
            self.namespace,
            sid,
            SESSION_RECOVERED,
            {"recovered": all(r["recovered"] for r in results.values()), "rooms": results},
        )

    async def may_enter(self, principal: Principal, room: str) -> bool:
        """May this user be in `room` on this namespace (for recovery and room:join)?"""
        try:
            check_client_join(principal, room, self.client_room_kinds)
        except ApiError:
            return False
        return True

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.ips.pop(sid, None)
        principal = self.principals.pop(sid, None)
        if principal is not None:
            metrics.CONNECTIONS.labels(self.namespace).dec()
            await self.disconnected(sid, principal)

    async def connected(self, sid: str, principal: Principal, auth: dict[str, Any]) -> None:
        """Hook for a namespace after auth succeeded."""

    async def disconnected(self, sid: str, principal: Principal) -> None:
        """Hook for a namespace after a socket left."""

    # -- dispatch ---------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid, data = args[0], args[1:]
        principal = self.principals.get(sid)
        if principal is None:
            return fail(ApiError(Code.UNAUTHORIZED, "not connected"))
        token = logs.user_id.set(principal.user_id)
        self.node.inflight += 1
        try:
            result = ok(await self._dispatch(sid, principal, event, data))
            code = "ok"
            if contract.ENABLED:
                self._check_ack(event, result["data"])
        except ApiError as err:
            result, code = fail(err), err.code.value
            log.info(
                "client event refused",
                extra={"namespace": self.namespace, "event": str(event)[:64], "code": code},
            )
        except Exception as exc:
            refusal = refusal_for_outage(exc, log)
            if refusal is None:
                log.exception("client event failed", extra={"namespace": self.namespace})
                refusal = ApiError(Code.INTERNAL, "internal error; try again")
            result, code = fail(refusal), refusal.code.value
        finally:
            self.node.inflight -= 1
            logs.user_id.reset(token)
        label = event if event in self._handlers else "unknown"
        metrics.SOCKET_EVENTS.labels(self.namespace, label, code).inc()
        return result

    def _check_ack(self, event: str, data: Any) -> None:
        declared = self._handlers[event].ack
        if declared is Undocumented:
            contract.VIOLATIONS.append(f"ack of {self.namespace} {event}: not declared")
            raise ApiError(Code.INTERNAL, f"the ack of {event} is not declared (@handles ack=)")
        if not contract.check("ack of", f"{self.namespace} {event}", declared, data):
            raise ApiError(Code.INTERNAL, f"the ack of {event} does not match its declaration")

    async def _dispatch(
        self, sid: str, principal: Principal, event: str, data: tuple[Any, ...]
    ) -> Any:
        entry = self._handlers.get(event) if isinstance(event, str) else None
        if entry is None:
            raise ApiError(
                Code.UNKNOWN_EVENT,
                f"unknown event on {self.namespace}; see docs/protocol.md for its events",
            )
        if len(data) > 1:
            raise ApiError(Code.BAD_REQUEST, "send one payload object")
        raw = data[0] if data else None
        try:
            size = len(jsonutil.dumpb(raw)) if raw is not None else 0
        except TypeError:  # bytes and other non-JSON values
            raise ApiError(Code.BAD_REQUEST, "payload must be JSON (no binary)") from None
        if size > self.max_payload:
            raise ApiError(Code.PAYLOAD_TOO_LARGE, f"payload over {self.max_payload} bytes")
        decision = await self.node.limits.check(principal.user_id, self.ips.get(sid), event)
        if not decision.allowed:
            raise ApiError(
                Code.RATE_LIMITED,
                f"slow down: retry in {decision.retry_after:.1f}s",
                {"retry_after": round(decision.retry_after, 3), "limit": decision.limit},
            )
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ApiError(Code.BAD_REQUEST, "payload must be an object")
        payload = validate(entry.model, raw, "payload")
        return await getattr(self, entry.attr)(sid, principal, payload)

    # -- token lifetime ---------------------------------------------------------------------

    @handles(
        "auth:refresh",
        RefreshRequest,
        ack=Refreshed,
        errors=(Code.UNAUTHORIZED, Code.TOKEN_EXPIRED, Code.FORBIDDEN),
        example={"token": "<a fresh JWT of the same user>"},
    )
    async def auth_refresh(self, sid: str, principal: Principal, req: RefreshRequest) -> Any:
        """Swap in a fresh token before `exp`: the same user, a new expiry (and role)."""
        fresh = self.node.verifier.verify(req.token)
        if fresh.user_id != principal.user_id:
            raise ApiError(Code.FORBIDDEN, "the new token is for another user")
        self.principals[sid] = fresh
        return {"expires_at": fresh.expires_at}

    async def expire_tokens(self, now: float) -> int:
        """Disconnect sockets whose token expired (and was not refreshed)."""
        expired = [
            sid
            for sid, p in list(self.principals.items())
            if p.expires_at is not None and p.expires_at + 5 < now
        ]
        for sid in expired:
            await self.node.fanout.manager.send_to(
                self.namespace,
                sid,
                SERVER_DISCONNECT,
                {
                    "code": Code.TOKEN_EXPIRED.value,
                    "message": "token expired; reconnect with a fresh one",
                },
            )
            await self.disconnect(sid)
        return len(expired)

    # -- rooms ------------------------------------------------------------------------------

    def rooms_of(self, sid: str) -> list[str]:
        return [r for r in self.server.rooms(sid, namespace=self.namespace) if ":" in r]

    def check_join(self, sid: str, principal: Principal, room: str) -> None:
        check_client_join(principal, room, self.client_room_kinds)
        rooms = [r for r in self.rooms_of(sid) if r != user_room(principal.user_id)]
        if room not in rooms and len(rooms) >= self.node.settings.max_rooms_per_socket:
            raise ApiError(
                Code.FORBIDDEN,
                f"at most {self.node.settings.max_rooms_per_socket} rooms per socket; leave one",
            )

    async def join_checked(self, sid: str, principal: Principal, room: str) -> None:
        self.check_join(sid, principal, room)
        await self.enter_room(sid, room)


async def _not_counted(room: str) -> None:
    return None


class RoomsNamespace(Namespace):
    """A namespace whose clients join and leave open rooms (zone:, content:, live:).
    `viewed(room)` is told of every first join (the watching-now counts)."""

    client_room_kinds = frozenset({"zone", "content", "live"})

    def __init__(
        self, namespace: str, node: Node, viewed: Callable[[str], Awaitable[None]] = _not_counted
    ) -> None:
        super().__init__(namespace, node)
        self.viewed = viewed

    @handles(
        "room:join",
        JoinRequest,
        ack=Joined,
        errors=(Code.FORBIDDEN,),
        example={"room": "zone:music"},
    )
    async def room_join(self, sid: str, principal: Principal, req: JoinRequest) -> dict[str, Any]:
        """Join an open room (zone:, content:, live:); with `since`, replay what was missed."""
        if req.since is None:
            fresh = req.room not in self.rooms_of(sid)
            await self.join_checked(sid, principal, req.room)
            if fresh:
                await self.viewed(req.room)
            offset = await self.node.fanout.current_offset(self.namespace, req.room)
            return {"room": req.room, "offset": offset}
        self.check_join(sid, principal, req.room)
        result = (await self.node.fanout.recover(sid, self.namespace, {req.room: req.since}))[
            req.room
        ]
        return {"room": req.room, **result}

    @handles(
        "room:leave",
        RoomRequest,
        ack=Left,
        errors=(Code.FORBIDDEN,),
        example={"room": "zone:music"},
    )
    async def room_leave(self, sid: str, principal: Principal, req: RoomRequest) -> dict[str, Any]:
        """Leave a room (not the user's own room)."""
        if req.room == user_room(principal.user_id):
            raise ApiError(Code.FORBIDDEN, "the user room is kept while connected")
        await self.leave_room(sid, req.room)
        return {"room": req.room}
