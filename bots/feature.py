"""The Telegram bot as a node feature: the shared sender, linking, commands (aiogram dispatcher
fed by long polling in `ours bot` or by the webhook route), the daily brief job, the alert
consumer and the health heartbeat.

Without OURS_TELEGRAM_BOT_TOKEN the feature stays idle: no consumers, no jobs, the routes
answer `unavailable` and `sender.send` raises TelegramDisabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand, Update
from aiogram.utils.token import TokenValidationError
from aiohttp import web
from pydantic import ValidationError

from bots.alerts import Alerts, load_rules
from bots.brief import KIND as BRIEF_KIND
from bots.brief import Briefs
from bots.commands import USAGE, Commands
from bots.health import Health
from bots.http import BotRoutes
from bots.limiter import SendLimiter
from bots.links import Links
from bots.reports import Ledger, Reports
from bots.sender import Priority as SendPriority
from bots.sender import SendResult, TelegramSender
from bots.store import BotStore
from config import ConfigError
from server.clock import Clock, SystemClock
from server.errors import ApiError, Code
from server.events import Event
from server.feature import Feature
from server.personal_data import Erasure

if TYPE_CHECKING:
    from server.node import Node

log = logging.getLogger("ours.bot")

#: payload fields that carry a user id (the brief counts users seen in events)
USER_FIELDS = (
    "user_id",
    "from_user",
    "to_user",
    "creator_id",
    "follower_id",
    "followee_id",
    "subscriber_id",
    "host_id",
    "sender_id",
    "reader_id",
    "buyer_id",
    "seller_id",
    "member_id",
    "voter_id",
    "author_id",
)


class _FeatureClock:
    """Reads the feature's current clock, so a test can swap `feature.clock` at any time."""

    def __init__(self, feature: BotFeature) -> None:
        self.feature = feature

    def now(self) -> datetime:
        return self.feature.clock.now()


class BotFeature(Feature):
    name = "bot"

    def __init__(self, node: Node, *, ledger: Ledger, limiter: SendLimiter) -> None:
        """`ledger` answers a user's HOURS balance (/hours); `limiter` paces sends (in-process,
        or shared in Redis by every process with this bot's token)."""
        super().__init__(node)
        s = node.settings
        self.clock: Clock = SystemClock()
        clock = _FeatureClock(self)
        self.store = BotStore(node.storage)
        self.bot: Bot | None = None
        if s.telegram_bot_token:
            try:
                self.bot = Bot(
                    s.telegram_bot_token,
                    session=AiohttpSession(
                        api=TelegramAPIServer.from_base(s.telegram_api_base), timeout=20
                    ),
                )
            except TokenValidationError:
                raise ConfigError(
                    "OURS_TELEGRAM_BOT_TOKEN is not a bot token (expected <bot id>:<secret>"
                    " from @BotFather)"
                ) from None
        try:
            rules = load_rules(s.telegram_alert_rules)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.limiter = limiter
        self.sender = TelegramSender(self.bot, self.limiter, self.store)
        self.links = Links(self.store, clock)
        self.health = Health(node, self.store, clock)
        self.health.report = node.with_sockets  # `ours worker` serves no sockets
        self.reports = Reports(self.store, self.health, ledger)
        self.alerts = Alerts(self.store, self.sender, rules, self.health.node_id)
        self.briefs = Briefs(self.store, node.scheduler, self.sender, self.reports, clock)
        self.commands = Commands(
            self.store,
            self.links,
            self.reports,
            self.briefs,
            self.sender,
            node.audit,
            clock,
            rules,
        )
        self.dp = Dispatcher()
        self.dp.include_router(self.commands.router())
        self._username: str | None = None
        if self.bot is not None:
            node.bus.subscribe("bot-alerts", self.alerts.on_event)
            node.bus.subscribe("bot-stats", self.count_users)
            node.scheduler.register(BRIEF_KIND, self.briefs.run_job)
            self.health.listeners.append(self.alerts.on_health)

    @property
    def enabled(self) -> bool:
        return self.bot is not None

    def routes(self, app: web.Application) -> None:
        BotRoutes(self).add(app)

    async def start(self) -> None:
        if self.bot is None:
            log.info("telegram bot idle: OURS_TELEGRAM_BOT_TOKEN is not set")
            return
        self.sender.start()
        self.health.start()
        await self.briefs.plan_all()

    async def stop(self) -> None:
        if self.bot is None:
            return
        await self.health.close()
        await self.sender.close()
        await self.limiter.close()
        await self.bot.session.close()

    # -- updates ----------------------------------------------------------------------------

    async def feed_raw(self, raw: dict[str, Any]) -> None:
        """Handle one update as Telegram sent it (the webhook route)."""
        if self.bot is None:
            raise ApiError(Code.UNAVAILABLE, "the Telegram bot is not configured")
        try:
            update = Update.model_validate(raw, context={"bot": self.bot})
        except ValidationError:
            raise ApiError(Code.BAD_REQUEST, "not a Telegram update") from None
        await self.dp.feed_webhook_update(self.bot, update)

    async def poll(self, stop: asyncio.Event, *, polling_timeout: int = 30) -> None:
        """Long polling until `stop` is set (`ours bot`)."""
        if self.bot is None:
            raise ConfigError("OURS_TELEGRAM_BOT_TOKEN is not set: there is no bot to run")
        await self.bot.delete_webhook(drop_pending_updates=False)
        await self.publish_commands()
        task = asyncio.create_task(
            self.dp.start_polling(
                self.bot,
                polling_timeout=polling_timeout,
                handle_signals=False,
                close_bot_session=False,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            with contextlib.suppress(RuntimeError):
                await self.dp.stop_polling()
        stopper.cancel()
        await task

    async def set_webhook(self, url: str) -> None:
        """Point Telegram at `url` (the web server's POST /v1/webhooks/telegram)."""
        secret = self.node.settings.telegram_webhook_secret
        if self.bot is None or not secret:
            raise ConfigError(
                "webhook mode needs OURS_TELEGRAM_BOT_TOKEN and OURS_TELEGRAM_WEBHOOK_SECRET"
            )
        await self.bot.set_webhook(
            url, secret_token=secret, allowed_updates=self.dp.resolve_used_update_types()
        )
        await self.publish_commands()

    async def publish_commands(self) -> None:
        """Tell Telegram the command list (the menu clients show)."""
        assert self.bot is not None
        commands = [
            BotCommand(command=name, description=text.split(" — ", 1)[1][:256])
            for name, text in USAGE.items()
        ]
        try:
            await self.bot.set_my_commands(commands)
        except Exception:
            log.warning("could not publish the command list", exc_info=True)

    async def username(self) -> str | None:
        """The bot's @username (for t.me links), or None when Telegram does not answer."""
        if self._username is None and self.bot is not None:
            try:
                me = await asyncio.wait_for(self.bot.me(), timeout=3)
                self._username = me.username
            except Exception:
                log.info("getMe failed; link answers carry no t.me URL", exc_info=True)
        return self._username

    # -- notifications (the router's Telegram channel) --------------------------------------

    async def chat_for(self, user_id: str) -> int | None:
        """The chat linked to `user_id`; None if not linked or the chat blocked the bot."""
        return await self.store.chat_for_user(user_id)

    async def notify(self, chat_id: int, text: str, *, urgent: bool) -> SendResult:
        """Send a notification through the shared sender: after admin alerts, urgent ones
        before briefs. Raises TelegramDisabled without a token."""
        prio = SendPriority.NORMAL if urgent else SendPriority.BRIEF
        return await self.sender.send(chat_id, text, priority=prio)

    # -- a user's data ------------------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        return {"profile": await self.store.export_user(user_id)}

    async def erase_user(self, erasure: Erasure) -> None:
        """Their link and markers; after the commit, the send limits of the chat they had."""
        chats = await self.store.erase_user(erasure)
        limiter = self.limiter

        async def after() -> int:
            return sum([await limiter.forget_chat(chat) for chat in chats])

        if chats:
            erasure.after(after)

    # -- counters ---------------------------------------------------------------------------

    async def count_users(self, event: Event) -> None:
        """Bus consumer `bot-stats`: remember every user id an event mentions."""
        ids = [event.actor] if event.actor else []
        for name in USER_FIELDS:
            value = event.payload.get(name)
            if isinstance(value, str):
                ids.append(value)
        recipients = event.payload.get("recipients")
        if isinstance(recipients, list):
            ids += [r for r in recipients if isinstance(r, str)]
        await self.store.touch_users(ids, datetime.fromisoformat(event.ts))
