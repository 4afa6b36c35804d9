"""A fake Resend API: `POST /emails` (Bearer API key, JSON body with from/to/subject/html/text,
an optional Idempotency-Key that returns the first answer again), with Resend's error answers
`{"statusCode", "name", "message"}`: 401 missing/invalid key, 422 validation_error,
429 rate_limit_exceeded with retry-after (scripted), 500 application_error (scripted)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web


def _error(
    status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"statusCode": status, "name": name, "message": message}, status=status, headers=headers
    )


class FakeResend:
    def __init__(self, api_key: str = "re_test_key") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []  # every POST /emails body, any outcome
        self.emails: list[dict[str, Any]] = []  # the accepted emails
        self.idempotency: dict[str, str] = {}
        self._script: list[tuple[int, float | None]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def fail_next(self, status: int, *, retry_after: float | None = None, times: int = 1) -> None:
        self._script.extend([(status, retry_after)] * times)

    def to(self, address: str) -> list[dict[str, Any]]:
        return [e for e in self.emails if address in e.get("to", [])]

    async def start(self, port: int) -> str:
        app = web.Application()
        app.router.add_post("/emails", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth == "Bearer None":
            return _error(401, "missing_api_key", "Missing API key in the authorization header.")
        if auth != f"Bearer {self.api_key}":
            return _error(403, "invalid_api_key", "API key is invalid")
        if self._script:
            status, retry_after = self._script.pop(0)
            if status == 429:
                headers = {"retry-after": str(int(retry_after))} if retry_after else None
                return _error(
                    429,
                    "rate_limit_exceeded",
                    "Too many requests. You can only make 2 requests per second.",
                    headers,
                )
            return _error(status, "application_error", "An unexpected error occurred.")
        missing = [f for f in ("from", "to", "subject") if not body.get(f)]
        if missing or not (body.get("html") or body.get("text")):
            return _error(422, "validation_error", f"Missing `{(missing or ['html'])[0]}` field.")
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idempotency:
            return web.json_response({"id": self.idempotency[key]})
        email_id = str(uuid.uuid4())
        if key:
            self.idempotency[key] = email_id
        self.emails.append({**body, "id": email_id, "idempotency_key": key})
        return web.json_response({"id": email_id})
