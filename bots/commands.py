"""The bot's commands (seed 004) as an aiogram router. Handlers stay thin: who is asking (the
chat's link), may they (linked, admin for admin commands), are the arguments right (else a usage
line), then a report from `bots.reports`, sent back through the shared rate-limited sender.

Open to every chat: /start [code], /help. Linked users: /hours, /unlink. Linked admins:
/status, /brief, /trending, /revenue, /alerts on|off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import ErrorEvent, Message

from bots.alerts import ErrorRateRule, EventRule, rules_summary
from bots.brief import Briefs
from bots.links import Links, is_admin
from bots.reports import Reports
from bots.sender import Priority, TelegramSender
from bots.store import BotStore, Link
from server.audit import AuditLog
from server.auth import Principal, Role
from server.clock import Clock

log = logging.getLogger("ours.bot.commands")

USAGE: dict[str, str] = {
    "start": "/start <code> — link this chat (get the code in OURS → Settings → Telegram)",
    "status": "/status — platform health, active users, revenue today",
    "brief": "/brief — today's daily brief (also sent at 08:00 your time)",
    "hours": "/hours — your HOURS balance and tier",
    "trending": "/trending — top 5 trending content right now",
    "revenue": "/revenue — revenue dashboard summary",
    "alerts": "/alerts on|off — real-time alerts on or off",
    "unlink": "/unlink — unlink this chat from your OURS account",
    "help": "/help — what I can do",
}
ADMIN_ONLY = ("status", "brief", "trending", "revenue", "alerts")
LINKED = ("hours", "unlink")

NOT_LINKED = (
    "This chat is not linked to an OURS account yet. Open OURS → Settings → Telegram, get a"
    " code, and send /start <code> here (codes are valid for 10 minutes)."
)
BAD_CODE = (
    "That code is invalid, already used or expired. Get a new one in OURS → Settings →"
    " Telegram (codes are valid for 10 minutes)."
)
PRIVATE_ONLY = "Please link me in a private chat with me, not in a group."
UNKNOWN = "I don't know that one. /help lists what I can do."
FAILED = "Sorry, something went wrong on our side. Please try again in a minute."


def usage(name: str) -> str:
    return f"Usage: {USAGE[name]}"


def refusal(name: str, link: Link) -> str:
    return (
        f"Sorry, /{name} is for OURS admins only (your account's role is {link.role})."
        " You can use /hours, /unlink and /help."
    )


def help_text(link: Link | None) -> str:
    if link is None:
        names = ["start", "help"]
        head = "I'm the OURS bot. Link this chat first:"
    elif is_admin(link):
        names = [*ADMIN_ONLY, "hours", "unlink", "help"]
        head = f"Linked as @{link.user_id} (admin). Commands:"
    else:
        names = ["hours", "unlink", "help"]
        head = f"Linked as @{link.user_id}. Commands:"
    return "\n".join([head, *(USAGE[n] for n in names)])


@dataclass(eq=False)
class Commands:
    store: BotStore
    links: Links
    reports: Reports
    briefs: Briefs
    sender: TelegramSender
    audit: AuditLog
    clock: Clock
    rules: list[EventRule | ErrorRateRule]

    def router(self) -> Router:
        r = Router(name="ours-bot")
        r.message.register(self.on_start, CommandStart())
        for name in ("status", "brief", "hours", "trending", "revenue", "alerts", "unlink"):
            r.message.register(getattr(self, f"on_{name}"), Command(name, ignore_case=True))
        r.message.register(self.on_help, Command("help", ignore_case=True))
        r.message.register(self.on_other, F.text)
        r.errors.register(self.on_error)
        return r

    async def reply(self, message: Message, text: str) -> None:
        await self.sender.send(message.chat.id, text, priority=Priority.NORMAL)

    async def _link(self, message: Message) -> Link | None:
        """The chat's link; a message from a chat that had blocked the bot unblocks it."""
        if await self.store.unblock_chat(message.chat.id):
            log.info("chat unblocked the bot", extra={"chat_id": message.chat.id})
        return await self.store.link_by_chat(message.chat.id)

    async def _allowed(self, name: str, message: Message, command: CommandObject) -> Link | None:
        """The link when this chat may run /name with these arguments; else replies why not."""
        link = await self._link(message)
        if link is None:
            await self.reply(message, NOT_LINKED)
            return None
        if name in ADMIN_ONLY and not is_admin(link):
            await self.reply(message, refusal(name, link))
            return None
        if name != "alerts" and command.args:
            await self.reply(message, usage(name))
            return None
        return link

    # -- open -------------------------------------------------------------------------------

    async def on_start(self, message: Message, command: CommandObject) -> None:
        if message.chat.type != "private":
            await self.reply(message, PRIVATE_ONLY)
            return
        if not command.args:
            link = await self._link(message)
            await self.reply(message, help_text(link) if link else NOT_LINKED)
            return
        code = command.args.strip()
        if " " in code:
            await self.reply(message, usage("start"))
            return
        link = await self.links.redeem(code, message.chat.id)  # also unblocks the chat
        if link is None:
            await self.reply(message, BAD_CODE)
            return
        if is_admin(link):
            await self.briefs.plan(link, catch_up=False)
            await self.audit.record(
                Principal(link.user_id, Role.ADMIN),
                "telegram.link",
                f"telegram:{link.chat_id}",
                details={"tz": link.tz},
            )
            text = (
                f"✅ Linked to @{link.user_id} (admin). Your daily brief comes at 08:00"
                f" {link.tz}. Real-time alerts are off; /alerts on turns them on.\n\n"
                + help_text(link)
            )
        else:
            text = (
                f"✅ Linked to @{link.user_id}. OURS notifications you route to Telegram will"
                " arrive here.\n\n" + help_text(link)
            )
        await self.reply(message, text)

    async def on_help(self, message: Message, command: CommandObject) -> None:
        if command.args:
            await self.reply(message, usage("help"))
            return
        await self.reply(message, help_text(await self._link(message)))

    async def on_other(self, message: Message) -> None:
        link = await self._link(message)
        await self.reply(message, UNKNOWN if link else NOT_LINKED)

    # -- linked users -----------------------------------------------------------------------

    async def on_hours(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("hours", message, command)
        if link:
            await self.reply(message, await self.reports.hours(link.user_id))

    async def on_unlink(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("unlink", message, command)
        if link is None:
            return
        await self.store.unlink_chat(message.chat.id)
        if is_admin(link):
            await self.audit.record(
                Principal(link.user_id, Role.ADMIN), "telegram.unlink", f"telegram:{link.chat_id}"
            )
        await self.reply(
            message,
            "Unlinked. This chat gets nothing more from OURS. To link again, send /start <code>.",
        )

    # -- admins -----------------------------------------------------------------------------

    async def on_status(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("status", message, command)
        if link:
            await self.reply(message, await self.reports.status(link.tz, self.clock.now()))

    async def on_brief(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("brief", message, command)
        if link:
            await self.reply(message, await self.reports.brief(link.tz, self.clock.now()))

    async def on_trending(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("trending", message, command)
        if link:
            await self.reply(message, await self.reports.trending(self.clock.now()))

    async def on_revenue(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("revenue", message, command)
        if link:
            await self.reply(message, await self.reports.revenue(link.tz, self.clock.now()))

    async def on_alerts(self, message: Message, command: CommandObject) -> None:
        link = await self._allowed("alerts", message, command)
        if link is None:
            return
        arg = (command.args or "").strip().lower()
        if arg not in ("on", "off"):
            await self.reply(message, usage("alerts"))
            return
        on = arg == "on"
        await self.store.set_alerts(message.chat.id, on)
        await self.audit.record(
            Principal(link.user_id, Role.ADMIN),
            "telegram.alerts",
            f"telegram:{link.chat_id}",
            details={"on": on},
        )
        if on:
            rules = "\n".join(f"• {line}" for line in rules_summary(self.rules))
            text = f"🔔 Real-time alerts are on. You'll hear about:\n{rules}"
        else:
            text = "🔕 Real-time alerts are off. /alerts on turns them back on."
        await self.reply(message, text)

    # -- errors -----------------------------------------------------------------------------

    async def on_error(self, event: ErrorEvent) -> None:
        log.error("bot update failed", exc_info=event.exception)
        message = event.update.message
        if message is not None:
            try:
                await self.reply(message, FAILED)
            except Exception:
                log.warning("could not tell the chat about the failure", exc_info=True)
