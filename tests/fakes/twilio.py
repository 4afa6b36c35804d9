"""A fake Twilio REST API: the Messages resource
`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (HTTP basic auth, form fields To, From,
Body) answering 201 with a Message resource, and Twilio's error answers
`{"code", "message", "more_info", "status"}`: 401 (20003), 400 invalid To (21211) for numbers in
`invalid`, 429 (20429, Retry-After) and 500 when scripted."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from aiohttp import web


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
        },
        status=status,
        headers=headers,
    )


class FakeTwilio:
    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "tw-secret") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.invalid: set[str] = set()
        self._script: list[tuple[int, float | None]] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def fail_next(self, status: int, *, retry_after: float | None = None, times: int = 1) -> None:
        self._script.extend([(status, retry_after)] * times)

    async def start(self, port: int) -> str:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append(form)
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if (
            request.match_info["sid"] != self.account_sid
            or request.headers.get("Authorization") != f"Basic {expected}"
        ):
            return _error(401, 20003, "Authenticate")
        if self._script:
            status, retry_after = self._script.pop(0)
            if status == 429:
                headers = {"Retry-After": str(int(retry_after))} if retry_after else None
                return _error(429, 20429, "Too Many Requests", headers)
            return _error(status, 20500, "Internal Server Error")
        to = str(form.get("To", ""))
        if to in self.invalid or not to.startswith("+"):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = f"SM{next(self._ids):032x}"
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": form.get("From"),
            "body": form.get("Body"),
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages.append(message)
        return web.json_response(message, status=201)
