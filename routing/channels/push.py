"""Push through Firebase Cloud Messaging (FCM HTTP v1) to every registered device.

FCM v1 takes one request per device: `POST {fcm_base_url}/v1/projects/{project}/messages:send`
with an OAuth2 access token. We post those from the event loop over one aiohttp session (an
HTTP/1.1 keep-alive pool of at most `push_concurrency` connections), with at most that many
requests in flight per process; nothing waits in a thread. Measured with
bench/notify/push_clients.py (1,000 sends, 64 in flight; shared 2-core machine, load ~2,
indicative), CPU of the sending process per send: aiohttp (HTTP/1.1) ~270-350 us; firebase-admin's
sync `messaging.send` in 16 threads ~1,400-1,700 us; httpx over one multiplexed HTTP/2
connection ~2,000-2,300 us (against a bare h2 answerer); httpx HTTP/1.1 ~3,400-7,000 us;
firebase-admin's `send_each_async` (httpx) ~11,000-13,000 us. So HTTP/1.1 it is: one TLS
connection per request in flight to fcm.googleapis.com, kept alive, which Google's front end
accepts. An http:// base URL (the fakes) is spoken to the same way.

The token: the service-account JSON goes through firebase-admin's `credentials.Certificate`
(its FCM scopes), whose google-auth credentials refresh the token at `fcm_token_url` (set as
the JSON's `token_uri`). The refresh is a blocking call, so it runs in a thread, once for all
waiting sends, and ten minutes before the token expires (the old token keeps sending
meanwhile). A 401 refreshes it and tries once more.

Per request, as firebase-admin's HTTP client did: 500/503 are retried inside the attempt
(4 times; after 0, 1, 2, 4 s, without holding a request slot) and a network error once. A
429's Retry-After is not slept out here: the dispatcher retries the delivery durably after it.
Tokens FCM calls unregistered (404 UNREGISTERED), invalid (400 INVALID_ARGUMENT about the
token) or of another sender (SENDER_ID_MISMATCH) are pruned from the registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import google.auth.transport.requests
from firebase_admin import credentials
from google.oauth2 import service_account

from config import Settings
from routing.channels.base import (
    Message,
    OutboundChannel,
    PermanentError,
    Sent,
    Skip,
    TransientError,
    parse_retry_after,
)
from routing.preferences import Preferences
from routing.priorities import Channel, Priority
from routing.store.devices import DeviceStore

log = logging.getLogger("ours.router.push")

#: 500/503 retries inside one attempt, and the wait before each (firebase-admin's
#: DEFAULT_RETRY_CONFIG: 4 times, backoff factor 0.5 s, the first retry at once)
SERVER_RETRY_WAITS = (0.0, 1.0, 2.0, 4.0)
#: refresh the access token behind the sends this long before it expires (google-auth calls it
#: invalid, and we wait for a new one, when less than 3 min 45 s are left)
REFRESH_AHEAD = timedelta(minutes=10)
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FcmResult:
    """FCM's answer to one device's request."""

    status: int  # HTTP status; 0 for a network error
    name: str | None = None  # the message id, when accepted
    code: str = ""  # the FCM errorCode (UNREGISTERED, ...) or the error status
    message: str = ""
    retry_after: float | None = None

    @property
    def prunable(self) -> bool:
        if self.code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
            return True
        return self.code == "INVALID_ARGUMENT" and "token" in self.message.lower()

    def describe(self) -> str:
        if self.status == 0:
            return f"network error: {self.message}"
        return f"FCM {self.status} {self.code}: {self.message}"


class FcmClient:
    """One FCM project's messages:send, at most `concurrency` requests in flight."""

    def __init__(self, url: str, creds: service_account.Credentials, concurrency: int) -> None:
        self.url = url
        self.creds = creds
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the access token -------------------------------------------------------------------

    async def token(self) -> str:
        """A valid access token: refreshed in a thread, once for all sends waiting on it."""
        creds = self.creds
        if creds.token is not None and creds.expiry is not None:
            left = creds.expiry - datetime.now(UTC).replace(tzinfo=None)
            if left > REFRESH_AHEAD:
                return str(creds.token)
            if creds.valid:  # a few minutes left: refresh behind the sends
                self._refreshing()
                return str(creds.token)
        await asyncio.shield(self._refreshing())
        return str(creds.token)

    def _refreshing(self) -> asyncio.Task[None]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._do_refresh(), name="fcm:token")
            self._refresh.add_done_callback(_log_refresh_failure)
        return self._refresh

    async def _do_refresh(self) -> None:
        await asyncio.to_thread(self.creds.refresh, google.auth.transport.requests.Request())

    async def _stale(self, used: str) -> None:
        """FCM refused `used` (401): refresh, unless another send already did."""
        if self.creds.token == used:
            await asyncio.shield(self._refreshing())

    # -- one device -------------------------------------------------------------------------

    async def send(self, body: bytes) -> FcmResult:
        """Post one message; retries 500/503 and a network error within the call, and a 401
        once after refreshing the token."""
        server_retries = 0
        network_retried = auth_retried = False
        while True:
            try:
                token = await self.token()
            except Exception as exc:  # the token endpoint away or refusing: as a network error
                result = FcmResult(0, code="auth", message=f"token refresh: {exc}"[:300])
                if network_retried:
                    return result
                network_retried = True
                continue
            result = await self._post(body, token)
            if result.status == 401 and not auth_retried:
                auth_retried = True
                await self._stale(token)
                continue
            if result.status in (500, 503) and server_retries < len(SERVER_RETRY_WAITS):
                await asyncio.sleep(SERVER_RETRY_WAITS[server_retries])
                server_retries += 1
                continue
            if result.status == 0 and not network_retried:
                network_retried = True
                continue
            return result

    async def _post(self, body: bytes, token: str) -> FcmResult:
        assert self._session is not None, "FcmClient.start() first"
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        try:
            async with (
                self._slots,
                self._session.post(self.url, data=body, headers=headers) as resp,
            ):
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return FcmResult(0, message=f"{type(exc).__name__}: {exc}"[:300])
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if status == 200:
            return FcmResult(200, name=str(answer.get("name", "")))
        return _error(status, answer, raw, parse_retry_after(retry_after))


def _log_refresh_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("FCM access token refresh failed", extra={"error": str(exc)[:300]})


def _error(status: int, answer: Any, raw: bytes, retry_after: float | None) -> FcmResult:
    err = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(err, dict):
        return FcmResult(status, code=str(status), message=raw[:200].decode(errors="replace"))
    code = str(err.get("status") or status)
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return FcmResult(
        status, code=code, message=str(err.get("message", ""))[:300], retry_after=retry_after
    )


class PushChannel(OutboundChannel):
    name = Channel.PUSH

    def __init__(self, settings: Settings, devices: DeviceStore) -> None:
        self.concurrency = settings.push_concurrency
        super().__init__()
        self.settings = settings
        self.devices = devices
        self.client: FcmClient | None = None

    def unavailable(self) -> str | None:
        return None if self.client is not None else "push not configured"

    async def start(self) -> None:
        path = self.settings.fcm_credentials_file
        if path is None:
            return
        info = json.loads(path.read_text())
        info["token_uri"] = self.settings.fcm_token_url
        creds = credentials.Certificate(info).get_credential()
        project = self.settings.fcm_project_id or info.get("project_id")
        base = self.settings.fcm_base_url.rstrip("/")
        client = FcmClient(f"{base}/v1/projects/{project}/messages:send", creds, self.concurrency)
        await client.start()
        self.client = client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        await super().close()

    async def addresses(self, user_ids: list[str]) -> dict[str, Any]:
        return await self.devices.of_users(user_ids)

    @staticmethod
    def _bodies(msg: Message, devices: list[tuple[str, str]]) -> list[bytes]:
        """The v1 `{"message": ...}` body for each device (as firebase-admin encodes it)."""
        urgent = msg.priority is Priority.IMMEDIATE
        common: dict[str, Any] = {"notification": {"title": msg.title, "body": msg.body}}
        if msg.data:
            common["data"] = msg.data
        per_platform: dict[str, dict[str, Any]] = {
            "android": {
                "android": {
                    "priority": "high" if urgent else "normal",
                    "collapse_key": msg.key[:64],
                }
            },
            "ios": {
                "apns": {
                    "headers": {
                        "apns-priority": "10" if urgent else "5",
                        "apns-collapse-id": msg.key[:64],
                    }
                }
            },
            "web": {
                "webpush": {
                    "headers": {"Urgency": "high" if urgent else "normal"},
                    "notification": {"tag": msg.key},
                }
            },
        }
        return [
            json.dumps(
                {
                    "message": {
                        "token": token,
                        **common,
                        **per_platform.get(platform, per_platform["web"]),
                    }
                },
                separators=(",", ":"),
            ).encode()
            for token, platform in devices
        ]

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        devices: list[tuple[str, str]] = msg.address or []
        if not devices:
            raise Skip("no_device", "no push device registered")
        client = self.client
        assert client is not None
        bodies = self._bodies(msg, devices)
        if len(bodies) == 1:
            results = [await client.send(bodies[0])]
        else:  # a user's devices (at most router_max_devices) at once
            results = list(await asyncio.gather(*(client.send(b) for b in bodies)))
        ok_ids: list[str] = []
        prune: list[str] = []
        transient: list[str] = []
        retry_after: float | None = None
        for (token, _), result in zip(devices, results, strict=True):
            if result.name is not None:
                ok_ids.append(result.name)
            elif result.prunable:
                prune.append(token)
            else:
                transient.append(result.describe())
                if result.retry_after is not None:
                    retry_after = max(retry_after or 0.0, result.retry_after)
        if prune:
            await self.devices.prune(prune)
            log.info("pruned push tokens", extra={"count": len(prune)})
        detail = f"{len(ok_ids)}/{len(devices)} devices"
        if prune:
            detail += f"; {len(prune)} invalid token(s) pruned"
        if ok_ids:
            if transient:
                detail += f"; {len(transient)} failed: {transient[0]}"
            return Sent(ok_ids[0], detail)
        if transient:
            raise TransientError(f"{detail}; {transient[0]}"[:500], retry_after)
        raise PermanentError("invalid_token", detail)
