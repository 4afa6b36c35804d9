"""The bot's HTTP routes: link codes for signed-in users, and the Telegram webhook.

POST   /v1/me/telegram/link      user JWT; {"tz"?: IANA zone} -> a one-time code (10 min)
GET    /v1/me/telegram           user JWT -> this user's link (or linked: false)
DELETE /v1/me/telegram/link      user JWT -> unlink
POST   /v1/webhooks/telegram     Telegram, with X-Telegram-Bot-Api-Secret-Token
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bots.links import valid_tz
from server.clock import zone_schema
from server.contract import Outgoing
from server.errors import ApiError, Code, validate
from server.http_api import USER, envelope, read_body, read_json, require_user
from server.openapi import operation

if TYPE_CHECKING:
    from bots.feature import BotFeature

log = logging.getLogger("ours.bot.http")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tz: Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=zone_schema)] = "UTC"

    @field_validator("tz")
    @classmethod
    def _zone(cls, v: str) -> str:
        if not valid_tz(v):
            raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin")
        return v


class TelegramUpdate(BaseModel):
    """Telegram's `Update` (https://core.telegram.org/bots/api#update): `update_id` and one
    of message, callback_query, ... (validated by aiogram; other fields allowed)."""

    model_config = ConfigDict(extra="allow", strict=True)
    update_id: int


class LinkCode(Outgoing):
    code: str = Field(description="one-time code, valid for 10 minutes")
    command: str = Field(description="what to send the bot: /start <code>")
    expires_at: str = Field(description="ISO 8601")
    tz: str = Field(description="the IANA time zone of the daily brief")
    url: str | None = Field(
        None, description="t.me deep link that sends the command (when the bot's name is known)"
    )


class TelegramLink(Outgoing):
    """`linked: false` alone when the user has no Telegram link."""

    linked: bool
    chat_id: int | None = Field(None, description="the Telegram chat")
    role: str | None = Field(None, description="the user's role when they linked")
    tz: str | None = Field(None, description="IANA time zone of the daily brief")
    alerts: bool | None = Field(None, description="operator alerts on (admins)")
    blocked: bool | None = Field(None, description="the user blocked the bot")
    linked_at: str | None = Field(None, description="ISO 8601")


class Unlinked(Outgoing):
    unlinked: bool = Field(description="false: there was no link")


class UpdateTaken(Outgoing):
    ok: Literal[True]


class BotRoutes:
    def __init__(self, feature: BotFeature) -> None:
        self.feature = feature

    def add(self, app: web.Application) -> None:
        app.router.add_post("/v1/me/telegram/link", self.create_link)
        app.router.add_get("/v1/me/telegram", self.get_link)
        app.router.add_delete("/v1/me/telegram/link", self.delete_link)
        app.router.add_post("/v1/webhooks/telegram", self.telegram_webhook)

    def _require_enabled(self) -> None:
        if not self.feature.enabled:
            raise ApiError(Code.UNAVAILABLE, "the Telegram bot is not configured on this server")

    @operation(
        "A one-time code that links the signed-in user's Telegram chat with the bot",
        LinkCode,
        status=201,
        security=USER,
        body=LinkRequest,
        body_required=False,
        example={
            "code": "q7Jx0tV2mK9sLw3a",
            "command": "/start q7Jx0tV2mK9sLw3a",
            "expires_at": "2025-01-05T18:10:00+00:00",
            "tz": "Europe/Berlin",
            "url": "https://t.me/ours_bot?start=q7Jx0tV2mK9sLw3a",
        },
    )
    async def create_link(self, request: web.Request) -> web.Response:
        """Send the command to the bot (or open `url`) within 10 minutes. `tz` (default UTC)
        is the time zone of the daily brief. `unavailable` when the bot is not configured."""
        principal = require_user(request)
        self._require_enabled()
        body = await read_body(request, LinkRequest, required=False)
        code = await self.feature.links.new_code(principal, body.tz)
        data = {
            "code": code.code,
            "command": f"/start {code.code}",
            "expires_at": code.expires_at.isoformat(),
            "tz": body.tz,
        }
        username = await self.feature.username()
        if username:
            data["url"] = f"https://t.me/{username}?start={code.code}"
        return envelope(request, data, status=201)

    @operation(
        "The signed-in user's Telegram link (or linked: false)",
        TelegramLink,
        security=USER,
        example={
            "linked": True,
            "chat_id": 123456789,
            "role": "creator",
            "tz": "Europe/Berlin",
            "alerts": False,
            "blocked": False,
            "linked_at": "2025-01-05T18:02:00+00:00",
        },
    )
    async def get_link(self, request: web.Request) -> web.Response:
        principal = require_user(request)
        link = await self.feature.store.link_by_user(principal.user_id)
        if link is None:
            return envelope(request, {"linked": False})
        return envelope(
            request,
            {
                "linked": True,
                "chat_id": link.chat_id,
                "role": link.role,
                "tz": link.tz,
                "alerts": link.alerts,
                "blocked": link.blocked,
                "linked_at": link.linked_at.isoformat(),
            },
        )

    @operation(
        "Unlink the signed-in user's Telegram chat",
        Unlinked,
        security=USER,
        example={"unlinked": True},
    )
    async def delete_link(self, request: web.Request) -> web.Response:
        principal = require_user(request)
        removed = await self.feature.store.unlink_user(principal.user_id)
        return envelope(request, {"unlinked": removed})

    @operation(
        "Telegram's webhook: one bot update",
        UpdateTaken,
        security=("telegramSecret",),
        body=TelegramUpdate,
        errors=(Code.NOT_FOUND,),
        example={"ok": True},
    )
    async def telegram_webhook(self, request: web.Request) -> web.Response:
        """Only in webhook mode (OURS_TELEGRAM_MODE=webhook with OURS_TELEGRAM_WEBHOOK_SECRET;
        `not_found` otherwise); `unavailable` when the bot is not configured. The body is
        Telegram's own `Update`."""
        feature = self.feature
        settings = feature.node.settings
        self._require_enabled()
        secret = settings.telegram_webhook_secret
        if settings.telegram_mode != "webhook" or not secret:
            raise ApiError(
                Code.NOT_FOUND,
                "webhook mode is off (OURS_TELEGRAM_MODE=webhook and"
                " OURS_TELEGRAM_WEBHOOK_SECRET turn it on)",
            )
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("telegram webhook with a wrong secret token")
            raise ApiError(Code.UNAUTHORIZED, f"missing or wrong {SECRET_HEADER}")
        raw = await read_json(request)
        validate(TelegramUpdate, raw, "Telegram update", object_only=True)
        assert isinstance(raw, dict)
        await feature.feed_raw(raw)
        return envelope(request, {"ok": True})
