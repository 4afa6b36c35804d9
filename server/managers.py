"""Socket.IO client managers with cluster-wide user-room control.

`join_user` / `leave_user` put every socket of a user (all devices, on every node) into a room
or take them out; `disconnect_user` closes them. Locally that walks the `user:{id}` room; across
nodes the request rides python-socketio's Redis pub/sub channel as a reserved emit that each
node applies to its own sockets.
"""

from __future__ import annotations

from typing import Any

import socketio

CONTROL_EVENT = "__ours_control__"


async def _apply(manager: Any, namespace: str, op: dict[str, Any]) -> None:
    server = manager.server
    if server is None or namespace not in manager.rooms:
        return
    sids = [sid for sid, _ in manager.get_participants(namespace, f"user:{op['user']}")]
    for sid in sids:
        if op["op"] == "enter":
            await manager.enter_room(sid, namespace, op["room"])
        elif op["op"] == "leave":
            await manager.leave_room(sid, namespace, op["room"])
        elif op["op"] == "disconnect":
            await server.emit(
                "server:disconnect",
                {"code": op.get("code", "forbidden"), "message": op.get("reason", "")},
                to=sid,
                namespace=namespace,
                ignore_queue=True,
            )
            await server.disconnect(sid, namespace=namespace, ignore_queue=True)


class LocalManager(socketio.AsyncManager):
    """One process: user-room control applied directly."""

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        await _apply(self, namespace, op)


class RedisManager(socketio.AsyncRedisManager):
    """Several processes: user-room control published to every node."""

    async def user_control(self, namespace: str, op: dict[str, Any]) -> None:
        message = {
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
        await _apply(self, namespace, op)
        await self._publish(message)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("event") == CONTROL_EVENT:
            await _apply(self, message["namespace"], message["data"][0])
            return
        await super()._handle_emit(message)
