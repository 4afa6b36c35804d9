"""The Socket.IO Admin UI (https://admin.socket.io) through python-socketio's `instrument()`:
an `/admin` namespace that accepts `{username: "admin", password: OURS_ADMIN_UI_PASSWORD}`.

Off unless the password is set. Read-only: room membership is a server rule here, so the UI
may watch sockets and rooms but not join, leave, emit or disconnect. `production` mode (the
default) reports counts and aggregated events; `development` (OURS_ADMIN_UI_MODE) also lists
every socket and event, at a cost on every emit.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import socketio

log = logging.getLogger("ours.console.admin_ui")

USERNAME = "admin"
NAMESPACE = "/admin"


class AdminUI:
    def __init__(self, sio: socketio.AsyncServer, password: str, mode: str) -> None:
        self._sio = sio
        self._password = password
        self._mode = mode
        self._instrumented: Any = None

    def start(self) -> None:
        self._instrumented = self._sio.instrument(
            auth=self._allowed,
            mode=self._mode,
            read_only=True,
            namespace=NAMESPACE,
        )
        log.info("socket.io admin ui enabled", extra={"namespace": NAMESPACE, "mode": self._mode})

    def _allowed(self, auth: Any) -> bool:
        """The admin UI's login, compared in constant time."""
        if not isinstance(auth, dict) or set(auth) != {"username", "password"}:
            return False
        user, password = auth["username"], auth["password"]
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        return hmac.compare_digest(user.encode(), USERNAME.encode()) & hmac.compare_digest(
            password.encode(), self._password.encode()
        )

    async def stop(self) -> None:
        if self._instrumented is None:
            return
        await self._instrumented.shutdown()
        # instrument() patches engine.io's socket class process-wide; undo it so another server
        # in the same process (tests) does not report to this one
        self._instrumented.uninstrument()
        self._instrumented = None
