"""Export of one user's data (`GET /v1/me/export`): everything this server holds about them, as
one JSON document. Each feature contributes its own sections (`export_user`, server/feature.py:
messages decrypted by messaging, notifications by routing, ...), the core the audit entries and
events; secrets are left out (Telegram link-code hashes, stream keys, push-device tokens)."""

from __future__ import annotations

from typing import Any

from server.clock import utcnow
from server.node import Node
from server.personal_data import records

FORMAT = "ours-export/1"
MAX_EVENTS = 10_000


def merge(archive: dict[str, Any], sections: dict[str, Any]) -> None:
    """Add a feature's sections; one that several features fill (a dict) is merged."""
    for name, value in sections.items():
        current = archive.get(name)
        if isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
        else:
            archive[name] = value


class Exporter:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def export(self, user_id: str) -> dict[str, Any]:
        archive: dict[str, Any] = {
            "format": FORMAT,
            "user_id": user_id,
            "exported_at": utcnow().isoformat(),
            "profile": {},
        }
        for feature in self.node.features:
            merge(archive, await feature.export_user(user_id))
        archive["audit"] = records(await self.node.audit.export_user(user_id))
        events = await self.node.events.export_user(user_id, MAX_EVENTS + 1)
        archive["events"] = records(events[:MAX_EVENTS])
        archive["events_truncated"] = len(events) > MAX_EVENTS
        return archive
