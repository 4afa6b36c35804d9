"""Email through Resend (the `resend` SDK): HTML and text parts, an idempotency key per send.

Seam: the SDK's module settings `resend.api_key` and `resend.api_url` (its supported override,
also read from RESEND_API_URL). Its sync client (requests) runs in the channel's 8 worker
threads, off the event loop, and requests start at most `resend_rate` per second (default 2:
Resend's documented default limit of 2 requests per second per team), evenly spaced. The pace
is per process: with several processes on one Resend team, divide it among them.
"""

from __future__ import annotations

from typing import Any

import resend
from resend.exceptions import ResendError

from config import Settings
from routing import render
from routing.channels.base import (
    Message,
    OutboundChannel,
    Pacer,
    PermanentError,
    Sent,
    Skip,
    TransientError,
    parse_retry_after,
)
from routing.preferences import Preferences
from routing.priorities import Channel


class EmailChannel(OutboundChannel):
    name = Channel.EMAIL
    concurrency = 8

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.rate = settings.resend_rate
        self.pace = Pacer(settings.resend_rate)

    def unavailable(self) -> str | None:
        return None if self.settings.resend_api_key else "email not configured"

    async def start(self) -> None:
        if self.settings.resend_api_key:
            resend.api_key = self.settings.resend_api_key
            resend.api_url = self.settings.resend_base_url.rstrip("/")

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        if not prefs.email:
            raise Skip("no_address", "no email address")
        parts = render.email(
            msg.items, heading=msg.heading, total=int(msg.data.get("total", 0)) or None
        )
        params: dict[str, Any] = {
            "from": self.settings.email_from,
            "to": [prefs.email],
            "subject": parts["subject"],
            "html": parts["html"],
            "text": parts["text"],
            "tags": [{"name": "kind", "value": msg.data.get("kind", "notification")}],
        }
        await self.pace.wait()
        try:
            resp = await self.in_thread(
                resend.Emails.send,
                params,
                {"idempotency_key": msg.key},
            )
        except ResendError as exc:
            raise _classify(exc) from None
        return Sent(str(resp.get("id")), f"{len(msg.items)} notification(s)")


def _classify(exc: ResendError) -> Exception:
    try:
        status = int(exc.code)
    except (TypeError, ValueError):
        status = 500
    detail = f"Resend {status} {exc.error_type}: {exc.message}"[:500]
    if status == 429 or status >= 500 or status in (401, 403):
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return TransientError(detail, parse_retry_after(headers.get("retry-after")))
    return PermanentError("rejected", detail)
