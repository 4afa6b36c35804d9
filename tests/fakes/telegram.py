"""A fake Telegram Bot API (aiohttp) at /bot<token>/<method>, for aiogram pointed at it with
`TelegramAPIServer.from_base(fake.url)`.

It speaks the Bot API's answers: `{"ok": true, "result": ...}` or `{"ok": false, "error_code",
"description", "parameters"?}`; 401 for a wrong token, 429 with `parameters.retry_after` (on
demand with `flood()`, and by itself when a client breaks 30 messages/s overall or 1 message/s
per chat), 403 "bot was blocked by the user" for chats passed to `block()`. Every call is
recorded with its arrival time (time.monotonic) and answer status. getUpdates serves updates
queued with `push_update()` (long polling), so `ours bot` can run against it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 123456
TOKEN = f"{BOT_ID}:TEST-fake-telegram-token"
USERNAME = "ours_test_bot"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    t: float  # arrival, time.monotonic()
    status: int = 200
    chat_id: int | None = None
    text: str | None = None


@dataclass
class FakeTelegram:
    token: str = TOKEN
    enforce_limits: bool = True  # answer 429 like Telegram when 30/s or 1/s per chat is broken
    calls: list[Call] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)
    _flood: dict[int, list[int]] = field(default_factory=dict)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _accepted: list[float] = field(default_factory=list)  # times of delivered messages
    _last_per_chat: dict[int, float] = field(default_factory=dict)
    _message_ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    port: int = 0

    # -- control ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def flood(self, chat_id: int, retry_after: int, times: int = 1) -> None:
        """Answer the next `times` sendMessage calls to `chat_id` with 429 retry_after."""
        self._flood.setdefault(chat_id, []).extend([retry_after] * times)

    def block(self, chat_id: int) -> None:
        """The user of `chat_id` blocked the bot: sendMessage answers 403."""
        self.blocked.add(chat_id)

    def push_update(self, update: dict[str, Any]) -> None:
        self._updates.append(update)
        self._new_update.set()

    # -- inspection -------------------------------------------------------------------------

    def messages(self, chat_id: int | None = None) -> list[Call]:
        """sendMessage calls (any answer), optionally to one chat, in arrival order."""
        return [
            c
            for c in self.calls
            if c.method == "sendMessage" and (chat_id is None or c.chat_id == chat_id)
        ]

    def delivered(self, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.messages(chat_id) if c.status == 200]

    async def wait_delivered(self, chat_id: int, count: int, timeout: float = 10) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.delivered(chat_id)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [c.text for c in self.delivered(chat_id)]
                raise TimeoutError(f"chat {chat_id}: {len(got)}/{count} messages: {got}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.delivered(chat_id)

    @staticmethod
    def max_in_window(times: list[float], window: float = 1.0) -> int:
        """The most timestamps inside any half-open window [t, t + window)."""
        times = sorted(times)
        best = 0
        for i, t in enumerate(times):
            best = max(best, bisect.bisect_left(times, t + window) - i)
        return best

    # -- the API ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        method = request.match_info["method"]
        params: dict[str, Any] = dict(await request.post())
        if request.content_type == "application/json":
            params = await request.json()
        call = Call(method, params, now)
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                return self._error(call, 401, "Unauthorized")
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                return self._error(call, 404, "Not Found: method not found")
            return await handler(call)
        finally:
            self._changed.set()

    def _error(
        self, call: Call, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        call.status = status
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def _m_getme(self, call: Call) -> web.Response:
        return self._ok(
            {
                "id": int(self.token.split(":")[0]),
                "is_bot": True,
                "first_name": "OURS",
                "username": USERNAME,
                "can_join_groups": False,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _m_sendmessage(self, call: Call) -> web.Response:
        try:
            chat_id = int(call.params["chat_id"])
            text = str(call.params["text"])
        except (KeyError, ValueError):
            return self._error(call, 400, "Bad Request: chat_id and text are required")
        call.chat_id, call.text = chat_id, text
        if not text.strip():
            return self._error(call, 400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self._error(call, 400, "Bad Request: message is too long")
        if chat_id in self.blocked:
            return self._error(call, 403, "Forbidden: bot was blocked by the user")
        queued = self._flood.get(chat_id)
        if queued:
            retry_after = queued.pop(0)
            return self._error(
                call,
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )
        if self.enforce_limits:
            recent = bisect.bisect_right(self._accepted, call.t - 1.0)
            last = self._last_per_chat.get(chat_id)
            if len(self._accepted) - recent >= 30 or (last is not None and call.t - last < 1.0):
                return self._error(
                    call, 429, "Too Many Requests: retry after 1", {"retry_after": 1}
                )
        self._accepted.append(call.t)
        self._last_per_chat[chat_id] = call.t
        return self._ok(
            {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "OURS"},
                "text": text,
            }
        )

    async def _m_getupdates(self, call: Call) -> web.Response:
        offset = int(call.params.get("offset") or 0)
        timeout = min(float(call.params.get("timeout") or 0), 5.0)
        deadline = time.monotonic() + timeout
        while True:
            pending = [u for u in self._updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return self._ok(pending)
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass

    async def _m_deletewebhook(self, call: Call) -> web.Response:
        return self._ok(True)

    async def _m_setwebhook(self, call: Call) -> web.Response:
        if not str(call.params.get("url", "")).startswith("https://"):
            return self._error(call, 400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        return self._ok(True)

    async def _m_setmycommands(self, call: Call) -> web.Response:
        try:
            json.loads(call.params["commands"])
        except (KeyError, ValueError):
            return self._error(call, 400, "Bad Request: can't parse commands")
        return self._ok(True)


_update_ids = itertools.count(1)


def message_update(
    chat_id: int,
    text: str,
    *,
    user_id: int | None = None,
    chat_type: str = "private",
    first_name: str = "Ada",
) -> dict[str, Any]:
    """A Telegram `Update` with one text message, as getUpdates / a webhook delivers it."""
    user = user_id if user_id is not None else chat_id
    message: dict[str, Any] = {
        "message_id": next(_update_ids),
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": chat_type}
        | ({"first_name": first_name} if chat_type == "private" else {"title": "A group"}),
        "from": {"id": user, "is_bot": False, "first_name": first_name},
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": next(_update_ids), "message": message}
