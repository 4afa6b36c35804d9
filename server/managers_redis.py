"""The Socket.IO client manager of several processes: every room emit is appended to the
Redis room log and published in one Lua call (server/roomlog_redis.py); every node, this one
included, delivers what it receives from the channel, so all nodes see a room's events in the
same order. What both managers share is `managers.Delivery`."""

from __future__ import annotations

import uuid
from typing import Any

import socketio

from server import redis_client
from server.managers import (
    CONTROL_EVENT,
    Delivery,
    apply_control,
    is_binary,
    room_targets,
)
from server.roomlog_redis import RedisRoomLog


class RedisManager(Delivery, socketio.AsyncRedisManager):
    """Several processes: Redis room log + ordered publish; every node delivers locally."""

    batches = True

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        prefix: str,
        write_only: bool = False,
        json: Any = None,
        window_s: float = 120.0,
        log_redis: Any = None,
    ) -> None:
        """`log_redis`: the client for the room log (the process's shared one); pub/sub keeps
        python-socketio's own connection."""
        super().__init__(url, channel=channel, write_only=write_only, json=json)
        self._init_delivery()
        self.log_redis = log_redis if log_redis is not None else redis_client.connect(url)
        self.roomlog = RedisRoomLog(self.log_redis, prefix, channel, window_s)

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        volatile: bool = False,
        **kwargs: Any,
    ) -> None:
        room = to or room
        rooms = room_targets(room)
        if rooms is None or callback is not None or is_binary(data) or kwargs.get("ignore_queue"):
            await super().emit(
                event,
                data,
                namespace=namespace or "/",
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        skip = skip_sid if isinstance(skip_sid, list) else ([skip_sid] if skip_sid else [])
        message = _room_message(namespace or "/", rooms, event, data, skip)
        if volatile:
            await self.roomlog.publish_volatile(message)
        else:
            await self.roomlog.append_publish(rooms, message)

    async def emit_many(self, items: list[tuple[str, Any, str, list[str]]]) -> None:
        """Room events (event, data, namespace, rooms), logged and published in order in one
        round trip."""
        await self.roomlog.append_publish_many(
            [(rooms, _room_message(ns, rooms, event, data, [])) for event, data, ns, rooms in items]
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("ours"):
            m = message["m"]
            await self.deliver_local(
                m["ns"],
                m["rooms"],
                m["event"],
                m["data"],
                set(m["skip"]),
                message["offsets"],
                m["eid"],
            )
            return
        if message.get("event") == CONTROL_EVENT:
            await apply_control(self, message["namespace"], message["data"][0])
            return
        await super()._handle_emit(message)

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        await apply_control(self, namespace, op)
        await self._publish(
            {
                "method": "emit",
                "event": CONTROL_EVENT,
                "data": [op],
                "binary": False,
                "namespace": namespace,
                "room": None,
                "skip_sid": None,
                "callback": None,
                "host_id": self.host_id,
            }
        )


def _room_message(
    ns: str, rooms: list[str], event: str, data: Any, skip: list[str]
) -> dict[str, Any]:
    """A room emit as it travels on the Redis channel (and sits in the room logs)."""
    return {
        "ns": ns,
        "rooms": rooms,
        "event": event,
        "data": data,
        "skip": skip,
        "eid": uuid.uuid4().hex,
    }
