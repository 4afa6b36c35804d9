"""A fake Firebase Cloud Messaging: the Google OAuth token endpoint (JWT-bearer grant, the
assertion verified against the service account's public key) and FCM HTTP v1
`POST /v1/projects/{project}/messages:send`, with its error answers:

  401 UNAUTHENTICATED      unknown or expired access token (the SDK refreshes and retries)
  404 UNREGISTERED         a token in `unregistered`, or one starting with `gone-` (the app
                           was uninstalled)
  400 INVALID_ARGUMENT     a token in `invalid` ("not a valid FCM registration token")
  429 QUOTA_EXCEEDED       scripted with `fail_next(429, retry_after=...)`, with Retry-After;
                           and every `throttle_every`-th send (when set) with Retry-After: 1
  500 INTERNAL             scripted with `fail_next(500)`

`latency` (seconds) delays every send's answer, as the real service's round trip does, so
concurrent senders overlap here; `max_in_flight` is the most sends seen at once.
`service_account(path)` writes a service-account JSON whose token_uri is this fake.
It speaks HTTP/1.1 on plain http:// (aiohttp), as the push channel does with an http:// base
URL. GET /_stats: the totals, per-status counts and per-token accepted counts (benchmarks).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# google-auth signs the grant for Google's token endpoint, whatever token_uri says
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _error(
    status: int, message: str, fcm_code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    err: dict[str, Any] = {"code": status, "message": message, "status": STATUS[status]}
    if fcm_code:
        err["details"] = [{"@type": FCM_ERROR, "errorCode": fcm_code}]
    return web.json_response({"error": err}, status=status, headers=headers)


class FakeFCM:
    def __init__(self, project_id: str = "ours-test") -> None:
        self.project_id = project_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
        self.access_tokens: dict[str, float] = {}  # token -> expiry (unix)
        self.token_requests = 0
        self.requests: list[dict[str, Any]] = []  # every messages:send body, any outcome
        self.messages: list[dict[str, Any]] = []  # the accepted messages
        self.arrivals: list[float] = []  # time.time() of each accepted message
        self.unregistered: set[str] = set()
        self.invalid: set[str] = set()
        self._script: list[tuple[int, float | None]] = []
        self.throttle_every = 0  # every K-th send answers 429 with Retry-After: 1 (0: none)
        self.latency = 0.0  # seconds before each send is answered
        self.statuses: Counter[int] = Counter()  # sends answered, per HTTP status
        self.accepted_per_token: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._sends = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- test controls ----------------------------------------------------------------------

    def fail_next(self, status: int, *, retry_after: float | None = None, times: int = 1) -> None:
        """The next `times` sends answer `status` (401, 429, 500, 503)."""
        self._script.extend([(status, retry_after)] * times)

    def expire_tokens(self) -> None:
        self.access_tokens.clear()

    def to(self, token: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("token") == token]

    def service_account(self, path: Path) -> Path:
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project_id,
                    "private_key_id": "fake-key-1",
                    "private_key": pem,
                    "client_email": self.client_email,
                    "client_id": "1234567890",
                    "token_uri": self.token_url,
                }
            )
        )
        return path

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    # -- server -----------------------------------------------------------------------------

    async def start(self, port: int) -> str:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        app.router.add_get("/_stats", self._stats)  # the fake's own (benchmarks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stats(self, request: web.Request) -> web.Response:
        times = sorted(self.arrivals)
        gap = max(((b - a, a) for a, b in itertools.pairwise(times)), default=(0, 0))
        return web.json_response(
            {
                "longest_gap_s": round(gap[0], 3),
                "longest_gap_after": gap[1],
                "requests": len(self.requests),
                "accepted": len(self.messages),
                "first": min(self.arrivals, default=None),
                "last": max(self.arrivals, default=None),
                "token_requests": self.token_requests,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "per_token": dict(self.accepted_per_token),
                "max_in_flight": self.max_in_flight,
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests += 1
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion", "")),
                self._key.public_key(),
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
            )
        except jwt.PyJWTError as exc:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(exc)}, status=400
            )
        if claims.get("iss") != self.client_email:
            return web.json_response({"error": "invalid_grant"}, status=400)
        token = "ya29.fake-" + secrets.token_urlsafe(16)
        self.access_tokens[token] = time.time() + 3600
        return web.json_response(
            {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            resp = await self._answer(request)
        finally:
            self.in_flight -= 1
        self.statuses[resp.status] += 1
        return resp

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self._sends += 1
        if request.match_info["project"] != self.project_id:
            return _error(404, "Requested entity was not found.")
        auth = request.headers.get("Authorization", "")
        bearer = auth.removeprefix("Bearer ")
        if self.access_tokens.get(bearer, 0) < time.time():
            return _error(401, "Request had invalid authentication credentials.")
        if self._script:
            status, retry_after = self._script.pop(0)
            if status == 429:
                headers = {"Retry-After": str(int(retry_after))} if retry_after else None
                return _error(429, "Quota exceeded.", "QUOTA_EXCEEDED", headers)
            if status == 401:
                self.access_tokens.pop(bearer, None)
                return _error(401, "Request had invalid authentication credentials.")
            return _error(status, "Internal error encountered.", "INTERNAL")
        if self.throttle_every and self._sends % self.throttle_every == 0:
            return _error(429, "Quota exceeded.", "QUOTA_EXCEEDED", {"Retry-After": "1"})
        message = body.get("message") or {}
        token = message.get("token", "")
        if token in self.unregistered or token.startswith("gone-"):
            return _error(404, "Requested entity was not found.", "UNREGISTERED")
        if token in self.invalid or not token:
            return _error(
                400,
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        self.messages.append(message)
        self.arrivals.append(time.time())
        self.accepted_per_token[token] += 1
        return web.json_response({"name": f"projects/{self.project_id}/messages/{next(self._ids)}"})
