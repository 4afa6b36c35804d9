"""Linking a platform account to a Telegram chat: a signed-in user asks for a one-time code
(valid 10 minutes), sends `/start <code>` to the bot, and the chat is linked to the user with
the role the token had then. Also the one lookup the notification router needs:

    chat_id = await chat_id_for(node.storage, user_id)   # None: not linked, or blocked
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bots.store import BotStore, Link
from server.auth import Principal, Role
from server.clock import Clock
from server.policy import Action, allowed
from server.storage import Storage

CODE_TTL = timedelta(minutes=10)
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # what a /start deep-link parameter may carry


async def chat_id_for(storage: Storage, user_id: str) -> int | None:
    """The Telegram chat linked to `user_id`; None if not linked or the chat blocked the bot."""
    return await BotStore(storage).chat_for_user(user_id)


@dataclass(frozen=True, slots=True)
class LinkCode:
    code: str
    expires_at: datetime


def valid_tz(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def is_admin(link: Link) -> bool:
    try:
        role = Role(link.role)
    except ValueError:
        return False
    return allowed(Principal(link.user_id, role), Action.BOT_ADMIN)


def _hash(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


class Links:
    def __init__(self, store: BotStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def new_code(self, principal: Principal, tz: str = "UTC") -> LinkCode:
        if not valid_tz(tz):
            raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as Europe/Berlin")
        code = secrets.token_urlsafe(12)
        expires_at = self.clock.now() + CODE_TTL
        await self.store.add_code(
            _hash(code), principal.user_id, principal.role.value, tz, expires_at
        )
        return LinkCode(code, expires_at)

    async def redeem(self, code: str, chat_id: int) -> Link | None:
        """Link `chat_id` with the code's user; None if the code is bad, used or expired."""
        if not CODE_RE.match(code):
            return None
        return await self.store.redeem_and_link(_hash(code), chat_id, self.clock.now())
