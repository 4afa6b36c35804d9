"""Who may do what: the one place that decides. Handlers call `require(...)`; refusals are
`forbidden` with a message that says what would be needed."""

from __future__ import annotations

from enum import StrEnum

from server.auth import Principal, Role
from server.errors import ApiError, Code


class Action(StrEnum):
    AUDIO_CREATE = "audio.create"  # host an audio room
    STAGE_MANAGE = "stage.manage"  # invite, demote, mute, remove on an audio stage
    CHAT_MODERATE = "chat.moderate"  # delete, time out, ban in live chat
    MEDIA_UPLOAD = "media.upload"  # Cloudflare Stream uploads and live inputs
    HOURS_GRANT = "hours.grant"
    ADMIN_READ = "admin.read"  # audit log, operator views, dead letters
    ADMIN_WRITE = "admin.write"  # replay dead letters, rotate keys
    BOT_ADMIN = "bot.admin"  # Telegram admin commands


#: roles that may act anywhere; `owner_ok` actions are also open to the owner of the thing
#: (the host of a room, the owner of a conversation) and to whom the owner delegated.
RULES: dict[Action, tuple[frozenset[Role], bool]] = {
    Action.AUDIO_CREATE: (frozenset({Role.CREATOR, Role.MODERATOR, Role.ADMIN}), False),
    Action.STAGE_MANAGE: (frozenset({Role.MODERATOR, Role.ADMIN}), True),
    Action.CHAT_MODERATE: (frozenset({Role.MODERATOR, Role.ADMIN}), True),
    Action.MEDIA_UPLOAD: (frozenset({Role.CREATOR, Role.ADMIN}), False),
    Action.HOURS_GRANT: (frozenset({Role.ADMIN}), False),
    Action.ADMIN_READ: (frozenset({Role.ADMIN}), False),
    Action.ADMIN_WRITE: (frozenset({Role.ADMIN}), False),
    Action.BOT_ADMIN: (frozenset({Role.ADMIN}), False),
}


def allowed(principal: Principal, action: Action, *, owner: bool = False) -> bool:
    roles, owner_ok = RULES[action]
    return principal.role in roles or (owner_ok and owner)


def require(principal: Principal, action: Action, *, owner: bool = False) -> None:
    if not allowed(principal, action, owner=owner):
        roles, owner_ok = RULES[action]
        who = " or ".join(sorted(r.value for r in roles))
        if owner_ok:
            who += " (or the room's host/moderator)"
        raise ApiError(Code.FORBIDDEN, f"{action.value} needs {who}")
