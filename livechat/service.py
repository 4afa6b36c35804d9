"""Live chat in `live:{id}` rooms on /live: messages (idempotent on client_msg_id, stored and
trimmed), history, slow mode, moderation (delete, timeout, ban) by the live's host and by
moderators, reaction bursts, and the `lives` table fed by `live.started` / `live.ended`.
Handlers in livechat/sockets.py call this."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from livechat.gate import Gate, Verdict
from livechat.reactions import Kind, Reactions
from livechat.store import LiveChatStore
from server.auth import Principal
from server.clock import utcnow
from server.contract import Outgoing
from server.errors import ApiError, Code
from server.events import Event
from server.policy import Action, require
from server.rooms import is_room, user_room
from server.server_events import server_event

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.livechat")

NS = "/live"
MAX_BODY = 500  # characters
HISTORY = 50  # messages a client gets with chat:history
KEEP_PER_LIVE = 1000  # messages kept per live by the trim job ...
KEEP_SECONDS = 24 * 3600  # ... and for at most this long
MAX_SLOW_MODE_S = 3600
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_RUN = 200  # chat:sends of one live handled together (one gate call, INSERT and emit)


def live_room(live_id: str) -> str:
    return f"live:{live_id}"


# -- what live chat sends (acks in livechat/sockets.py, events to `live:{id}` and user rooms) --


class ChatMessage(Outgoing):
    """One chat message as clients see it (`chat:new`, `chat:history`)."""

    id: str = Field(description="the message's id (a UUID): `message_id` of chat:delete")
    live_id: str
    user_id: str = Field(description="who sent it")
    client_msg_id: str = Field(description="the sender's own id for it (retries reuse it)")
    body: str
    ts: str = Field(description="when the server stored it (ISO 8601)")


class ChatSlowMode(Outgoing):
    """A live's slow mode (`chat:slowmode`, and the ack of chat:slowmode)."""

    live_id: str
    seconds: int = Field(description="one message per user every this many seconds; 0: off")


class ChatMessageDeleted(Outgoing):
    live_id: str
    message_id: str = Field(description="the deleted message's id: drop it from the chat")


class ChatRestricted(Outgoing):
    """`chat:restricted`, to the restricted user's own room."""

    live_id: str
    kind: Literal["timeout", "ban", "lifted"] = Field(
        description="timeout: no sending until `until`; ban: out of the live's room and chat;"
        " lifted: a ban or timeout was lifted"
    )
    until: str | None = Field(None, description="with timeout: when it ends (ISO 8601)")


class ReactionBurst(Outgoing):
    live_id: str
    counts: dict[Kind, int] = Field(description="reactions of each kind since the last burst")


CHAT_NEW = server_event(
    "chat:new",
    ChatMessage,
    namespaces=(NS,),
    summary="A new message in a live's chat (to the `live:{id}` room; recoverable)",
    example={
        "id": "<message_id>",
        "live_id": "jazz-night",
        "user_id": "u_bob",
        "client_msg_id": "c-0001",
        "body": "what a solo!",
        "ts": "2025-05-01T20:15:03.120000+00:00",
    },
)
CHAT_SLOWMODE = server_event(
    "chat:slowmode",
    ChatSlowMode,
    namespaces=(NS,),
    summary="A moderator changed the live's slow mode (to the `live:{id}` room)",
    example={"live_id": "jazz-night", "seconds": 30},
)
CHAT_DELETED = server_event(
    "chat:deleted",
    ChatMessageDeleted,
    namespaces=(NS,),
    summary="A moderator deleted a message: remove it (to the `live:{id}` room)",
    example={"live_id": "jazz-night", "message_id": "<message_id>"},
)
CHAT_RESTRICTED = server_event(
    "chat:restricted",
    ChatRestricted,
    namespaces=(NS,),
    summary="You were timed out or banned in a live's chat, or that was lifted (to your own"
    " user room)",
    example={"live_id": "jazz-night", "kind": "timeout", "until": "2025-05-01T20:25:00+00:00"},
)
REACTION_BURST = server_event(
    "reaction:burst",
    ReactionBurst,
    namespaces=(NS,),
    summary="The reactions sent in a live since the last burst, at most 4 a second (to the"
    " `live:{id}` room; volatile: not replayed)",
    example={"live_id": "jazz-night", "counts": {"heart": 12, "fire": 3}},
)


def _wire(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "live_id": row["live_id"],
        "user_id": row["user_id"],
        "client_msg_id": row["client_msg_id"],
        "body": row["body"],
        "ts": row["created_at"].isoformat(),
    }


def _refusal(v: Verdict, live_id: str) -> ApiError:
    if v.outcome == "slow":
        return ApiError(
            Code.RATE_LIMITED,
            f"slow mode: one message per user every so often; retry in {v.retry_after:.1f}s",
            {"retry_after": round(v.retry_after, 3), "reason": "slow_mode"},
        )
    if v.outcome == "timeout":
        return ApiError(
            Code.FORBIDDEN,
            f"you are timed out in this chat for {v.retry_after:.0f}s more",
            {"retry_after": round(v.retry_after, 3), "reason": "timeout"},
        )
    if v.outcome == "banned":
        return ApiError(Code.FORBIDDEN, "you are banned from this chat", {"reason": "banned"})
    if v.outcome == "ended":
        return ApiError(Code.CONFLICT, f"live {live_id} has ended; its chat is closed")
    return ApiError(Code.NOT_FOUND, f"live {live_id} is not on (no live.started seen)")


@dataclass(slots=True)
class _Send:
    """A `chat:send` waiting for its run: `done` gets the ack's data or the refusal."""

    user_id: str
    client_msg_id: str
    body: str
    done: asyncio.Future[dict[str, Any]]


def _settle(pending: _Send, data: dict[str, Any]) -> None:
    if not pending.done.done():  # the sender may have gone (its handler cancelled)
        pending.done.set_result(data)


def _fail(pending: _Send, exc: BaseException) -> None:
    if not pending.done.done():
        if isinstance(exc, asyncio.CancelledError):
            pending.done.cancel()
        else:
            pending.done.set_exception(exc)


@dataclass(eq=False)
class LiveChat:
    node: Node
    store: LiveChatStore
    gate: Gate
    reactions: Reactions
    _queued: dict[str, list[_Send]] = field(default_factory=dict, init=False)
    _runners: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)

    # -- the gate -------------------------------------------------------------------------

    async def _admit(self, live_id: str, user_id: str, *, take_slot: bool) -> Verdict:
        """Ask the gate, loading the live's state from PostgreSQL when it holds no copy."""
        for _ in range(5):
            verdict = await self.gate.admit(live_id, user_id, take_slot=take_slot)
            if verdict is not None:
                return verdict
            gen = await self.gate.generation(live_id)
            await self.gate.fill(live_id, gen, await self.store.snapshot(live_id))
        raise ApiError(Code.UNAVAILABLE, "chat settings are changing; try again")

    async def may_enter(self, user_id: str, live_id: str) -> bool:
        """False when the user is banned from this live's chat (room:join and recovery)."""
        return (await self._admit(live_id, user_id, take_slot=False)).outcome != "banned"

    # -- lives (bus consumer) -------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """`live.started` names the host and opens the chat; `live.ended` closes it."""
        if event.type not in ("live.started", "live.ended"):
            return
        live_id = event.payload.get("live_id")
        if not isinstance(live_id, str) or not is_room(live_room(live_id)):
            return
        ts = datetime.fromisoformat(event.ts)
        if event.type == "live.started":
            applied = await self.store.live_started(live_id, event.payload["host_id"], ts)
        else:
            applied = await self.store.live_ended(live_id, event.payload.get("host_id"), ts)
        if applied:
            await self.gate.invalidate(live_id)

    # -- messages -------------------------------------------------------------------------

    async def send(
        self, user_id: str, live_id: str, client_msg_id: str, body: str
    ) -> dict[str, Any]:
        """Queue the send on the live's run and wait for its outcome (the ack's data, or the
        refusal raised): sends that arrive while a run is in flight go out together in the
        next one (see `_run_sends`)."""
        pending = _Send(user_id, client_msg_id, body, asyncio.get_running_loop().create_future())
        self._queued.setdefault(live_id, []).append(pending)
        if live_id not in self._runners:
            self._runners[live_id] = asyncio.create_task(
                self._run_sends(live_id), name=f"livechat-sends:{live_id}"
            )
        return await pending.done

    async def _run_sends(self, live_id: str) -> None:
        """One live's sends, a run at a time (at most MAX_RUN), in the order they came: each
        run is one gate decision, one INSERT and one room emit, so the room's order is the
        chat's `seq` order and a busy chat costs round trips per run, not per message."""
        try:
            while True:
                queued = self._queued.get(live_id)
                if not queued:
                    break
                run, self._queued[live_id] = queued[:MAX_RUN], queued[MAX_RUN:]
                try:
                    await self._send_run(live_id, run)
                except BaseException as exc:
                    for pending in run:
                        _fail(pending, exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._runners.pop(live_id, None)
            if not self._queued.get(live_id):
                self._queued.pop(live_id, None)
            else:  # cancelled with sends queued (shutdown): nothing will take them
                for pending in self._queued.pop(live_id):
                    _fail(pending, ApiError(Code.UNAVAILABLE, "live chat is stopping"))

    async def _send_run(self, live_id: str, run: list[_Send]) -> None:
        verdicts = await self._admit_many(live_id, [p.user_id for p in run])
        admitted: list[tuple[_Send, Verdict]] = []
        for pending, verdict in zip(run, verdicts, strict=True):
            if verdict.outcome == "ok":
                admitted.append((pending, verdict))
                continue
            if verdict.outcome == "slow":  # a retry of a message that went out is no new send
                first = await self.store.message_by_client_id(
                    live_id, pending.user_id, pending.client_msg_id
                )
                if first is not None:
                    _settle(pending, self._duplicate(first))
                    continue
            _fail(pending, _refusal(verdict, live_id))  # refused alone: the run goes on
        if not admitted:
            return
        try:
            rows = await self.store.insert_messages(
                live_id, [(p.user_id, p.client_msg_id, p.body) for p, _ in admitted]
            )
        except BaseException:  # not stored: they do not count for slow mode either
            await self._give_back(live_id, admitted)
            raise
        fresh: list[tuple[_Send, Any]] = []
        for (pending, verdict), row in zip(admitted, rows, strict=True):
            if row is not None:
                fresh.append((pending, row))
                continue
            # a retry: nothing new goes out, and it does not count for slow mode
            await self._give_back(live_id, [(pending, verdict)])
            first = await self.store.message_by_client_id(
                live_id, pending.user_id, pending.client_msg_id
            )
            assert first is not None
            _settle(pending, self._duplicate(first))
        if not fresh:
            return
        fresh.sort(key=lambda f: f[1]["seq"])
        wires = [_wire(row) for _, row in fresh]
        await self.node.fanout.emit_run(CHAT_NEW, wires, namespace=NS, room=live_room(live_id))
        for (pending, _), wire in zip(fresh, wires, strict=True):
            _settle(pending, {"id": wire["id"], "ts": wire["ts"]})

    async def _admit_many(self, live_id: str, user_ids: list[str]) -> list[Verdict]:
        """`_admit` for a run, taking the slow-mode slot of each send."""
        for _ in range(5):
            verdicts = await self.gate.admit_many(live_id, user_ids, take_slot=True)
            if verdicts is not None:
                return verdicts
            gen = await self.gate.generation(live_id)
            await self.gate.fill(live_id, gen, await self.store.snapshot(live_id))
        raise ApiError(Code.UNAVAILABLE, "chat settings are changing; try again")

    async def _give_back(self, live_id: str, sends: list[tuple[_Send, Verdict]]) -> None:
        for pending, verdict in sends:
            if verdict.stamp is not None:
                await self.gate.give_back(live_id, pending.user_id, verdict.stamp)

    @staticmethod
    def _duplicate(row: Any) -> dict[str, Any]:
        return {"id": str(row["id"]), "ts": row["created_at"].isoformat(), "duplicate": True}

    async def history(
        self, live_id: str, limit: int = HISTORY, before: uuid.UUID | None = None
    ) -> dict[str, Any]:
        rows = await self.store.recent(live_id, limit, before)
        live = await self.store.live(live_id)
        return {
            "live_id": live_id,
            "state": live["state"] if live else "none",
            "slow_mode_s": live["slow_mode_s"] if live else 0,
            "messages": [_wire(r) for r in rows],
        }

    # -- moderation -----------------------------------------------------------------------

    async def _require_moderator(self, principal: Principal, live_id: str) -> Any:
        live = await self.store.live(live_id)
        require(
            principal,
            Action.CHAT_MODERATE,
            owner=live is not None and live["host_id"] == principal.user_id,
        )
        return live

    async def set_slow_mode(
        self, principal: Principal, live_id: str, seconds: int, reason: str | None
    ) -> dict[str, Any]:
        live = await self._require_moderator(principal, live_id)
        if live is None:
            raise ApiError(Code.NOT_FOUND, f"live {live_id} is not known (no live.started seen)")
        async with self.store.transaction() as conn:
            await self.store.set_slow_mode(conn, live_id, seconds)
            await self.node.audit.record(
                principal,
                "chat.slowmode",
                live_room(live_id),
                reason,
                {"live_id": live_id, "seconds": seconds},
                conn=conn,
            )
        await self.gate.invalidate(live_id)
        data = {"live_id": live_id, "seconds": seconds}
        await self.node.fanout.emit(CHAT_SLOWMODE, data, namespace=NS, room=live_room(live_id))
        return data

    async def delete(
        self, principal: Principal, live_id: str, message_id: uuid.UUID, reason: str | None
    ) -> dict[str, Any]:
        await self._require_moderator(principal, live_id)
        async with self.store.transaction() as conn:
            row, deleted = await self.store.tombstone(conn, live_id, message_id, principal.user_id)
            if row is None:
                raise ApiError(Code.NOT_FOUND, "no such message in this live's chat")
            if deleted:
                await self.node.audit.record(
                    principal,
                    "chat.delete",
                    f"user:{row['user_id']}",
                    reason,
                    {"live_id": live_id, "message_id": str(message_id)},
                    conn=conn,
                )
        data = {"live_id": live_id, "message_id": str(message_id)}
        if deleted:
            await self.node.fanout.emit(CHAT_DELETED, data, namespace=NS, room=live_room(live_id))
        return {**data, "deleted": True}

    async def _check_target(self, principal: Principal, live: Any, user_id: str) -> None:
        if user_id == principal.user_id:
            raise ApiError(Code.BAD_REQUEST, "you cannot restrict yourself")
        if live is not None and live["host_id"] == user_id:
            raise ApiError(Code.FORBIDDEN, "the host of a live cannot be restricted in its chat")

    async def timeout(
        self,
        principal: Principal,
        live_id: str,
        user_id: str,
        seconds: int,
        reason: str | None,
    ) -> dict[str, Any]:
        live = await self._require_moderator(principal, live_id)
        await self._check_target(principal, live, user_id)
        until = utcnow() + timedelta(seconds=seconds)
        async with self.store.transaction() as conn:
            current = await self.store.restriction(conn, live_id, user_id)
            if current is not None and current["kind"] == "ban":
                raise ApiError(Code.CONFLICT, "this user is banned here; unban first")
            await self.store.restrict(
                conn, live_id, user_id, "timeout", until, principal.user_id, reason
            )
            await self.node.audit.record(
                principal,
                "chat.timeout",
                f"user:{user_id}",
                reason,
                {"live_id": live_id, "seconds": seconds, "until": until.isoformat()},
                conn=conn,
            )
        await self.gate.invalidate(live_id)
        data = {"live_id": live_id, "user_id": user_id, "until": until.isoformat()}
        await self._tell(user_id, {"live_id": live_id, "kind": "timeout", "until": data["until"]})
        return data

    async def ban(
        self, principal: Principal, live_id: str, user_id: str, reason: str | None
    ) -> dict[str, Any]:
        live = await self._require_moderator(principal, live_id)
        await self._check_target(principal, live, user_id)
        async with self.store.transaction() as conn:
            await self.store.restrict(
                conn, live_id, user_id, "ban", None, principal.user_id, reason
            )
            await self.node.audit.record(
                principal,
                "chat.ban",
                f"user:{user_id}",
                reason,
                {"live_id": live_id},
                conn=conn,
            )
        await self.gate.invalidate(live_id)
        # out of the room on every node, then told why (on the user room, which it keeps)
        await self.node.fanout.leave_user(NS, user_id, live_room(live_id))
        await self._tell(user_id, {"live_id": live_id, "kind": "ban"})
        return {"live_id": live_id, "user_id": user_id, "banned": True}

    async def unban(
        self, principal: Principal, live_id: str, user_id: str, reason: str | None
    ) -> dict[str, Any]:
        await self._require_moderator(principal, live_id)
        async with self.store.transaction() as conn:
            lifted = await self.store.lift(conn, live_id, user_id)
            if lifted is not None:
                await self.node.audit.record(
                    principal,
                    "chat.unban",
                    f"user:{user_id}",
                    reason,
                    {"live_id": live_id, "lifted": lifted["kind"]},
                    conn=conn,
                )
        if lifted is None:
            return {"live_id": live_id, "user_id": user_id, "lifted": None}
        await self.gate.invalidate(live_id)
        await self._tell(user_id, {"live_id": live_id, "kind": "lifted"})
        return {"live_id": live_id, "user_id": user_id, "lifted": lifted["kind"]}

    async def _tell(self, user_id: str, data: dict[str, Any]) -> None:
        await self.node.fanout.emit(CHAT_RESTRICTED, data, namespace=NS, room=user_room(user_id))

    # -- reactions ------------------------------------------------------------------------

    async def react(self, live_id: str, kind: str) -> None:
        await self.reactions.add(live_id, kind)

    async def burst(self, live_id: str, counts: dict[str, int]) -> None:
        """Flusher callback: one volatile frame with the counts since the last one."""
        await self.node.fanout.emit(
            REACTION_BURST,
            {"live_id": live_id, "counts": counts},
            namespace=NS,
            room=live_room(live_id),
            volatile=True,
        )

    # -- retention ------------------------------------------------------------------------

    async def trim(self, keep: int = KEEP_PER_LIVE, max_age_s: float = KEEP_SECONDS) -> int:
        removed = await self.store.trim(keep, max_age_s)
        if removed:
            log.info("live chat trimmed", extra={"removed": removed})
        return removed
