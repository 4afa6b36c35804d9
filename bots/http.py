"""The bot's HTTP routes: link codes for signed-in users, and the Telegram webhook.

POST   /v1/me/telegram/link      user JWT; {"tz"?: IANA zone} -> a one-time code (10 min)
GET    /v1/me/telegram           user JWT -> this user's link (or linked: false)
DELETE /v1/me/telegram/link      user JWT -> unlink
POST   /v1/webhooks/telegram     Telegram, with X-Telegram-Bot-Api-Secret-Token
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bots.links import valid_tz
from server.errors import ApiError, Code, validate
from server.http_api import envelope, read_json, require_user

if TYPE_CHECKING:
    from bots.feature import BotFeature

log = logging.getLogger("ours.bot.http")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tz: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"

    @field_validator("tz")
    @classmethod
    def _zone(cls, v: str) -> str:
        if not valid_tz(v):
            raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin")
        return v


class BotRoutes:
    def __init__(self, feature: BotFeature) -> None:
        self.feature = feature

    def add(self, app: web.Application) -> None:
        app.router.add_post("/v1/me/telegram/link", self.create_link)
        app.router.add_get("/v1/me/telegram", self.get_link)
        app.router.add_delete("/v1/me/telegram/link", self.delete_link)
        app.router.add_post("/v1/webhooks/telegram", self.webhook)

    def _require_enabled(self) -> None:
        if not self.feature.enabled:
            raise ApiError(Code.UNAVAILABLE, "the Telegram bot is not configured on this server")

    async def create_link(self, request: web.Request) -> web.Response:
        principal = require_user(request)
        self._require_enabled()
        raw = await read_json(request) if request.can_read_body else {}
        body = validate(LinkRequest, raw if raw is not None else {}, "link request")
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

    async def delete_link(self, request: web.Request) -> web.Response:
        principal = require_user(request)
        removed = await self.feature.store.unlink_user(principal.user_id)
        return envelope(request, {"unlinked": removed})

    async def webhook(self, request: web.Request) -> web.Response:
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
        if not isinstance(raw, dict) or not isinstance(raw.get("update_id"), int):
            raise ApiError(Code.BAD_REQUEST, "not a Telegram update")
        await feature.feed_raw(raw)
        return envelope(request, {"ok": True})
