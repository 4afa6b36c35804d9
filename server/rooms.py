"""Room names and who may join them from a client."""

from __future__ import annotations

import re

from server.auth import Principal
from server.errors import ApiError, Code

KINDS = ("user", "zone", "content", "live", "conversation", "audio", "presence")
ROOM_RE = re.compile(
    r"^(user|zone|content|live|conversation|audio|presence):[A-Za-z0-9_.\-]{1,64}$"
)
OPEN_KINDS = frozenset({"zone", "content", "live"})


def is_room(name: str) -> bool:
    return bool(ROOM_RE.match(name))


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def check_client_join(principal: Principal, room: str, allowed_kinds: frozenset[str]) -> None:
    """Raise unless a client may join `room` itself (server rules, not the client's claims)."""
    if not is_room(room):
        raise ApiError(
            Code.BAD_REQUEST,
            "room must look like zone:<name>, content:<id>, live:<id> (letters, digits, _.-)",
        )
    kind, _, ident = room.partition(":")
    if kind == "user":
        if ident != principal.user_id:
            raise ApiError(Code.FORBIDDEN, "you cannot join another user's room")
        return
    if kind not in allowed_kinds:
        raise ApiError(Code.FORBIDDEN, f"{kind}: rooms are joined by the server, not by clients")
