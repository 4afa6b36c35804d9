"""Export of one user's data (`GET /v1/me/export`): everything this server holds about them, as
one JSON document. Messages and scheduled notes are decrypted (through the messaging service);
secrets are left out (Telegram link-code hashes, stream keys, push-device tokens)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from server.crypto import unseal
from server.messaging import store as messaging_store
from server.messaging.service import tier

if TYPE_CHECKING:
    from server.messaging.service import Messaging
    from server.node import Node

FORMAT = "ours-export/1"
MAX_EVENTS = 10_000
PAGE = 100


def plain(value: Any) -> Any:
    """A database value as JSON: times ISO 8601, ids and amounts as strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def rows(records: Any, *, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in dict(r).items() if k not in drop} for r in records]


class Exporter:
    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def db(self) -> Any:
        return self.node.storage.db

    def _messaging(self) -> Messaging:
        return self.node.features["messaging"].service  # type: ignore[attr-defined]

    async def export(self, user_id: str) -> dict[str, Any]:
        archive: dict[str, Any] = {
            "format": FORMAT,
            "user_id": user_id,
            "exported_at": datetime.now(UTC).isoformat(),
            "profile": await self._profile(user_id),
        }
        archive.update(await self._messages(user_id))
        archive["hours"] = await self._hours(user_id)
        router = self.node.features.get("router")
        if router is not None:  # notifications, preferences, devices, delivery log
            archive.update(await router.store.export_user(user_id))  # type: ignore[attr-defined]
        activity = self.node.features.get("activity")
        if activity is not None:
            archive["activity"] = await activity.service.export_user(user_id)  # type: ignore[attr-defined]
        archive["audio"] = {
            "rooms_hosted": rows(
                await self.db.fetch("SELECT * FROM audio_rooms WHERE host_id = $1", user_id)
            ),
            "memberships": rows(
                await self.db.fetch("SELECT * FROM audio_members WHERE user_id = $1", user_id)
            ),
        }
        archive["media"] = {
            "videos": rows(
                await self.db.fetch(
                    "SELECT * FROM media WHERE creator_id = $1 ORDER BY created_at", user_id
                )
            ),
            "live_inputs": rows(
                await self.db.fetch(
                    "SELECT * FROM live_inputs WHERE creator_id = $1 ORDER BY created_at", user_id
                ),
                drop=("stream_key",),
            ),
        }
        archive["live_chat"] = {
            "messages": rows(
                await self.db.fetch(
                    "SELECT id, live_id, body, created_at, deleted_at FROM live_chat_messages"
                    " WHERE user_id = $1 ORDER BY created_at",
                    user_id,
                )
            ),
            "restrictions": rows(
                await self.db.fetch(
                    "SELECT live_id, kind, until, reason, created_at FROM live_chat_restrictions"
                    " WHERE user_id = $1",
                    user_id,
                )
            ),
        }
        archive["audit"] = rows(
            await self.db.fetch(
                "SELECT * FROM audit_log WHERE actor_id = $1 OR target = 'user:' || $1 ORDER BY id",
                user_id,
            )
        )
        events = await self.db.fetch(
            "SELECT id, type, subjects, payload, ts FROM events WHERE actor = $1"
            " ORDER BY ts DESC LIMIT $2",
            user_id,
            MAX_EVENTS + 1,
        )
        archive["events"] = rows(events[:MAX_EVENTS])
        archive["events_truncated"] = len(events) > MAX_EVENTS
        return archive

    async def _profile(self, user_id: str) -> dict[str, Any]:
        link = await self.db.fetchrow(
            "SELECT chat_id, role, tz, alerts, linked_at FROM telegram_links WHERE user_id = $1",
            user_id,
        )
        seen = await self.db.fetchrow(
            "SELECT first_seen, last_seen FROM bot_users WHERE user_id = $1", user_id
        )
        out: dict[str, Any] = {
            "telegram": rows([link])[0] if link else None,
            "telegram_link_codes": rows(
                await self.db.fetch(
                    "SELECT expires_at, used_at FROM telegram_link_codes WHERE user_id = $1",
                    user_id,
                )
            ),
            "daily_briefs_sent": rows(
                await self.db.fetch(
                    "SELECT local_date, sent_at FROM bot_briefs_sent WHERE user_id = $1"
                    " ORDER BY local_date",
                    user_id,
                )
            ),
            "seen_on_the_bus": rows([seen])[0] if seen else None,
        }
        presence = self.node.features.get("presence")
        if presence is not None:
            store = presence.service.store  # type: ignore[attr-defined]
            (status,) = await store.statuses([user_id])
            out["presence"] = {
                "invisible": await store.invisible(user_id),
                "last_seen": status.last_seen,
            }
        return out

    async def _messages(self, user_id: str) -> dict[str, Any]:
        """Conversations, every message the user can read (decrypted), scheduled notes."""
        svc = self._messaging()
        conversations = await svc.conversations(user_id, 100_000)
        messages: dict[str, list[dict[str, Any]]] = {}
        for conv in conversations:
            page: list[dict[str, Any]] = []
            before: int | None = None
            while True:
                got = await svc.history(user_id, conv["id"], before, PAGE)
                page.extend(got["messages"])
                before = got["next_before_seq"]
                if before is None:
                    break
            messages[conv["id"]] = sorted(page, key=lambda m: m["seq"])
        notes = []
        for note in await svc.scheduled(user_id, 100_000):
            row = await self.db.fetchrow(
                "SELECT body, created_at FROM scheduled_messages WHERE id = $1", note["id"]
            )
            conv_id = note["conversation_id"]
            # the note's AAD is the one Messaging.schedule seals it with
            key = await svc._key_for(conv_id)
            body = unseal(key, row["body"], f"note|{conv_id}|{note['id']}".encode()).decode()
            notes.append({**note, "body": body, "created_at": row["created_at"].isoformat()})
        return {"conversations": conversations, "messages": messages, "scheduled_notes": notes}

    async def _hours(self, user_id: str) -> dict[str, Any]:
        account = f"user:{user_id}"
        balance = await messaging_store.balance(self.db, account)
        transfers = await self.db.fetch(
            "SELECT * FROM hours_transfers WHERE from_account = $1 OR to_account = $1"
            " OR actor_id = $2 ORDER BY created_at",
            account,
            user_id,
        )
        entries = await self.db.fetch(
            "SELECT id, transfer_id, amount, created_at FROM ledger_entries WHERE account = $1"
            " ORDER BY id",
            account,
        )
        return {
            "account": account,
            "balance": str(balance),
            "tier": tier(balance),
            "transfers": rows(transfers),
            "ledger_entries": rows(entries),
        }
