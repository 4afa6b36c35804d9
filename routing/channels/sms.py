"""SMS through Twilio (`twilio.rest.Client`, Messages resource), only to a verified E.164 number.

Seam: the Api domain's `base_url` (`client.api.base_url`, a public attribute of the SDK's
Domain) is set to `twilio_base_url`. The SDK's exceptions do not carry response headers, so a
thin `TwilioHttpClient` subclass turns a 429 into `TwilioRetryAfter` with the Retry-After value.
The sync client runs in the channel's 4 worker threads, off the event loop, and requests
start at most `twilio_rate` per second (default 1: a long-code number's throughput of one
message segment per second). Twilio's API would take more and hold them in the account's queue
(up to 4 hours), but a message waiting there can no longer be cancelled when the notification is
read in-app, nor retried by us; so we keep the wait in our outbox. Raise it for a short code,
a toll-free number or a Messaging Service with several senders. The pace is per process.
"""

from __future__ import annotations

from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from config import Settings
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
from routing.preferences import E164, Preferences
from routing.priorities import Channel, Priority

#: Twilio error codes that will not heal by retrying (bad, unreachable or opted-out numbers)
PERMANENT_CODES = {21211, 21408, 21610, 21612, 21614, 21659, 30003, 30004, 30005, 30006}


class TwilioRetryAfter(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("Twilio 429 Too Many Requests")
        self.retry_after = retry_after


class _HttpClient(TwilioHttpClient):
    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        resp = super().request(method, url, *args, **kwargs)
        if resp.status_code == 429:
            raise TwilioRetryAfter(parse_retry_after(resp.headers.get("Retry-After")))
        return resp


class SmsChannel(OutboundChannel):
    name = Channel.SMS
    concurrency = 4

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.client: Client | None = None
        self.rate = settings.twilio_rate
        self.pace = Pacer(settings.twilio_rate)

    def unavailable(self) -> str | None:
        return None if self.client is not None else "sms not configured"

    async def start(self) -> None:
        s = self.settings
        if s.twilio_account_sid and s.twilio_auth_token and s.twilio_from_number:
            self.client = Client(
                s.twilio_account_sid, s.twilio_auth_token, http_client=_HttpClient(timeout=10)
            )
            self.client.api.base_url = s.twilio_base_url.rstrip("/")

    async def send(self, msg: Message, prefs: Preferences) -> Sent:
        if msg.priority is not Priority.IMMEDIATE:
            raise Skip("priority", "SMS is for immediate notifications only")
        if not prefs.phone:
            raise Skip("no_phone", "no phone number")
        if not prefs.phone_verified or not E164.match(prefs.phone):
            raise Skip("unverified_number", "the phone number is not verified")
        assert self.client is not None
        text = f"{msg.title}: {msg.body}"[:320]
        await self.pace.wait()
        try:
            created = await self.in_thread(
                self.client.messages.create,
                to=prefs.phone,
                from_=self.settings.twilio_from_number,
                body=text,
            )
        except TwilioRetryAfter as exc:
            raise TransientError("Twilio 429 Too Many Requests", exc.retry_after) from None
        except TwilioRestException as exc:
            detail = f"Twilio {exc.status} code {exc.code}: {exc.msg}"[:500]
            if exc.code in PERMANENT_CODES or (400 <= exc.status < 500 and exc.status != 401):
                raise PermanentError(
                    "invalid_number" if exc.code in PERMANENT_CODES else "rejected", detail
                ) from None
            raise TransientError(detail) from None
        except TwilioException as exc:
            raise TransientError(f"Twilio: {exc}") from None
        return Sent(created.sid, created.status)
