"""Push through Firebase Cloud Messaging (firebase-admin, FCM HTTP v1) to every registered device.

Seam: firebase-admin has no option for the FCM endpoint, so right after the app's messaging
service is created we set its `_fcm_url` to `{fcm_base_url}/v1/projects/{project}/messages:send`
(the one URL `send` posts to; see `firebase_admin.messaging._MessagingService`). The OAuth token
endpoint is the service-account JSON's `token_uri`, which we set from `fcm_token_url`. Both
default to Google's URLs.

The SDK's sync `messaging.send` (requests + google-auth's AuthorizedSession, which refreshes the
OAuth token, and once more after a 401) runs per device in the channel's worker threads. Not
`send_each` (a new thread pool per call), and not `send_each_async`: its token refresh is a
blocking call on the event loop, and its httpx pool measured ~3x slower here. The session gets
a connection pool the size of our threads for the configured endpoint (as the SDK mounts for
https://fcm.googleapis.com), keeping the SDK's retry of 500/503 but not its sleeping out a
429's Retry-After inside a thread: the dispatcher retries durably after it. Tokens FCM calls
unregistered, invalid or from another sender are pruned from the registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import warnings
from typing import Any

import firebase_admin
import requests.adapters
from firebase_admin import credentials, messaging
from firebase_admin import exceptions as fb_exc
from urllib3.util.retry import Retry

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


#: firebase_admin._http_client.DEFAULT_RETRY_CONFIG (500/503, 4 times, backoff) without
#: respecting Retry-After: a 429 comes back to the dispatcher instead of blocking a thread
SDK_RETRY = Retry(
    connect=1,
    read=1,
    status=4,
    status_forcelist=[500, 503],
    raise_on_status=False,
    backoff_factor=0.5,
    allowed_methods=None,
    respect_retry_after_header=False,
)


def _prunable(exc: BaseException) -> bool:
    if isinstance(exc, messaging.UnregisteredError | messaging.SenderIdMismatchError):
        return True
    return isinstance(exc, fb_exc.InvalidArgumentError) and "token" in str(exc).lower()


class PushChannel(OutboundChannel):
    name = Channel.PUSH
    concurrency = 16  # worker threads; more only fight the event loop for the GIL

    def __init__(self, settings: Settings, devices: DeviceStore) -> None:
        super().__init__()
        self.settings = settings
        self.devices = devices
        self.app: firebase_admin.App | None = None

    def unavailable(self) -> str | None:
        return None if self.app is not None else "push not configured"

    async def start(self) -> None:
        path = self.settings.fcm_credentials_file
        if path is None:
            return
        info = json.loads(path.read_text())
        info["token_uri"] = self.settings.fcm_token_url
        cert = credentials.Certificate(info)
        project = self.settings.fcm_project_id or info.get("project_id")
        self.app = firebase_admin.initialize_app(
            cert, {"projectId": project, "httpTimeout": 10}, name=f"ours-{uuid.uuid4().hex}"
        )
        service = messaging._get_messaging_service(self.app)
        base = self.settings.fcm_base_url.rstrip("/")
        service._fcm_url = f"{base}/v1/projects/{project}/messages:send"
        pool = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=self.concurrency, max_retries=SDK_RETRY
        )
        service._client.session.mount(base, pool)

    async def close(self) -> None:
        if self.app is not None:
            # delete_app() closes the service with asyncio.run(): needs a thread without a loop
            await asyncio.to_thread(firebase_admin.delete_app, self.app)
            self.app = None
        await super().close()

    def _message(self, msg: Message, token: str, platform: str) -> messaging.Message:
        urgent = msg.priority is Priority.IMMEDIATE
        android = apns = webpush = None
        if platform == "android":
            android = messaging.AndroidConfig(
                priority="high" if urgent else "normal", collapse_key=msg.key[:64]
            )
        elif platform == "ios":
            apns = messaging.APNSConfig(
                headers={"apns-priority": "10" if urgent else "5", "apns-collapse-id": msg.key[:64]}
            )
        else:
            webpush = messaging.WebpushConfig(
                headers={"Urgency": "high" if urgent else "normal"},
                notification=messaging.WebpushNotification(tag=msg.key),
            )
        return messaging.Message(
            token=token,
            notification=messaging.Notification(title=msg.title, body=msg.body),
            data=msg.data,
            android=android,
            apns=apns,
            webpush=webpush,
        )

    async def addresses(self, user_ids: list[str]) -> dict[str, Any]:
        return await self.devices.of_users(user_ids)

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        devices: list[tuple[str, str]] = msg.address or []
        if not devices:
            raise Skip("no_device", "no push device registered")
        with warnings.catch_warnings():
            # firebase-admin 7.7 deprecates `token` for `fid` (installation ids); clients still
            # register FCM registration tokens (getToken()), which FCM v1 accepts as `token`
            warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
            messages = [self._message(msg, token, platform) for token, platform in devices]
        results = await asyncio.gather(
            *(self.in_thread(messaging.send, m, app=self.app) for m in messages),
            return_exceptions=True,
        )
        ok_ids: list[str] = []
        prune: list[str] = []
        transient: list[str] = []
        retry_after: float | None = None
        for (token, _), error in zip(devices, results, strict=True):
            if isinstance(error, str):  # the message id
                ok_ids.append(error)
                continue
            if isinstance(error, ValueError):
                raise PermanentError("bad_message", f"FCM refused the message: {error}")
            if _prunable(error):
                prune.append(token)
            else:
                transient.append(f"{type(error).__name__}: {error}")
                http = getattr(error, "http_response", None)
                if http is not None:
                    ra = parse_retry_after(http.headers.get("Retry-After"))
                    if ra is not None:
                        retry_after = max(retry_after or 0.0, ra)
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
