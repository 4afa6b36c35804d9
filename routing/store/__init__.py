"""The router's SQL (migration 0003), one module per concept:

  preferences  `notification_prefs`: each user's preferences
  devices      `push_devices`: the push registry
  inbox        `notifications`, `notification_events`: the in-app inbox and which event
               reached whom (idempotency, daily caps, aggregation)
  outbox       `deliveries`: the delivery log, which the dispatcher sends from
  digests      `digest_runs` and the digest jobs
  audiences    `audiences`, `audience_members`: recipient lists events name

`RouterStore` holds the parts, one transaction across them (the router writes an event's
notifications, deliveries and digest jobs in one), and a user's export and erasure, which
span every table. Every statement that the fan-out path runs per recipient is a bulk
statement (unnest arrays, see `bulk`), so one event to thousands of users costs a handful of
round trips.
"""

from __future__ import annotations

from typing import Any

from routing.store.audiences import AudienceStore
from routing.store.devices import DeviceStore
from routing.store.digests import DIGEST_JOB, DigestStore
from routing.store.inbox import NOTIFICATION_COLUMNS, InboxStore, item
from routing.store.outbox import OutboxStore
from routing.store.preferences import PreferenceStore
from server.personal_data import Erasure
from server.storage import Storage, Store

#: every table with rows of a user, in the order an erasure deletes them
USER_TABLES = (
    "audience_members",
    "deliveries",
    "notification_events",
    "notifications",
    "push_devices",
    "notification_prefs",
    "digest_runs",
)


class RouterStore(Store):
    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.prefs = PreferenceStore(storage)
        self.devices = DeviceStore(storage)
        self.inbox = InboxStore(storage)
        self.outbox = OutboxStore(storage)
        self.digests = DigestStore(storage)
        self.audiences = AudienceStore(storage)

    # -- a user's data (export / delete) ----------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        db = self.storage.db
        prefs = await self.prefs.get(user_id)
        inbox = await db.fetch(
            f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        devices = await db.fetch(
            "SELECT platform, created_at, last_seen_at FROM push_devices WHERE user_id = $1",
            user_id,
        )
        return {
            "preferences": prefs.public(),
            "notifications": [item(r) for r in inbox],
            "devices": [
                {
                    "platform": r["platform"],
                    "created_at": r["created_at"].isoformat(),
                    "last_seen_at": r["last_seen_at"].isoformat(),
                }
                for r in devices
            ],
            "deliveries": await self.outbox.of_user(user_id),
            "audiences": await self.audiences.of_user(user_id),
        }

    async def erase_user(self, e: Erasure) -> None:
        """Remove every router row of this user (their digest jobs too); in other people's
        notifications (actors, texts, data) the user becomes the pseudonym."""
        for table in USER_TABLES:
            await e.conn.execute(f"DELETE FROM {table} WHERE user_id = $1", e.user_id)
        # the compact log of skipped deliveries: the user leaves its recipient lists
        emptied = await e.conn.fetch(
            "UPDATE delivery_skips SET user_ids = array_remove(user_ids, $1)"
            " WHERE user_ids @> ARRAY[$1::text] RETURNING id, cardinality(user_ids) AS n",
            e.user_id,
        )
        await e.conn.execute(
            "DELETE FROM delivery_skips WHERE id = ANY($1::bigint[])",
            [r["id"] for r in emptied if r["n"] == 0],
        )
        await e.conn.execute(
            "DELETE FROM jobs WHERE kind = $1 AND payload->>'user_id' = $2", DIGEST_JOB, e.user_id
        )
        await e.execute(
            "notifications (others')",
            "UPDATE notifications SET actors = privacy_erase_idents(actors, $1, $2),"
            " title = privacy_erase_text(title, $1, $2),"
            " body = privacy_erase_text(body, $1, $2),"
            " data = privacy_erase_json(data, $1, $2)"
            " WHERE $1 = ANY(actors)"
            " OR title IS DISTINCT FROM privacy_erase_text(title, $1, $2)"
            " OR body IS DISTINCT FROM privacy_erase_text(body, $1, $2)"
            " OR data IS DISTINCT FROM privacy_erase_json(data, $1, $2)",
            e.user_id,
            e.pseudonym,
        )
