"""Erasure of one user (`DELETE /v1/me`): every row of theirs removed or anonymized in ONE
transaction, then their traces in Redis and in process memory, and their sockets closed.

What "anonymized" means: the user id is replaced by a pseudonym, `erased:` + the first 20 hex
digits of HMAC-SHA256(master key, id). The pseudonym keeps records that belong to others
consistent (the audit log, the HOURS ledger, the other side of a conversation) without naming
the user; an operator holding the master key can still answer "was user X erased?" by computing
it, nobody can go from the pseudonym back to the id.

Each feature erases its own rows (`erase_user`, server/feature.py), the core its event log,
dead letters, jobs and audit log; this module runs them in one transaction, in the node's
feature order and the core last (jobs and events the features may have named), then the
after-commit steps (Redis, caches, LiveKit), and audits. What goes, per table (read
server/migrations/*.sql):
  removed     their notifications, preferences, push devices, delivery log (routing), activity
              opt-in and entries, conversation memberships, reactions on messages (theirs, and
              all on the messages they sent), scheduled notes, conversations left
              without members, audio rooms they host and their audio memberships, videos and live
              inputs they created, live-chat messages and restrictions on them, Telegram link,
              link codes, brief markers, the chat's blocked/alert markers, bot_users, their
              notes' jobs and every job whose payload names them (digests, daily briefs)
  anonymized  messages they sent (tombstoned: body removed, sender = pseudonym), the HOURS
              account (renamed, so ledger entries still sum to zero and balances stay right),
              transfers, the event log and dead letters (actor, subjects, payload strings), the
              audit log (through `audit_log_erase_subject`, migration 0009: append-only except
              for this substitution), other people's notifications, restrictions they imposed,
              lives they hosted, direct-conversation pair keys
  kept        the erasure itself, audited with the pseudonym as its target

Late writes: an event already on the bus when the erasure ran (a message to them, a tip) may be
consumed afterwards and recreate a row. Two follow-up sweeps (durable jobs, default after 30 s
and 10 min) run the same erasure again; their payload holds the id sealed with the master key,
and each deletes its own job row when done.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from server.auth import Principal
from server.clock import utcnow
from server.node import Node
from server.personal_data import Erasure

log = logging.getLogger("ours.privacy")

SWEEP_JOB = "privacy.sweep"
DISCONNECT_CODE = "account_deleted"


def pseudonym(master_key: bytes, user_id: str) -> str:
    digest = hmac.new(master_key, b"ours:erase:" + user_id.encode(), hashlib.sha256).hexdigest()
    return "erased:" + digest[:20]


class Eraser:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.sweeps: tuple[timedelta, ...] = (timedelta(seconds=30), timedelta(minutes=10))

    def pseudonym(self, user_id: str) -> str:
        return pseudonym(self.node.keyring.current, user_id)

    async def disconnect(self, user_id: str) -> None:
        """Close the user's sockets on every namespace of every node, telling them why."""
        for ns in self.node.namespaces:
            await self.node.fanout.disconnect_user(
                ns, user_id, DISCONNECT_CODE, "this account was deleted"
            )

    async def erase_rows(self, conn: Any, user_id: str, ps: str) -> Erasure:
        """Every feature's rows, then the core's, inside the caller's transaction."""
        erasure = Erasure(conn, user_id, ps)
        for feature in self.node.features:
            await feature.erase_user(erasure)
        await self.node.events.erase_user(erasure)
        await self.node.bus.erase_user(erasure)
        await self.node.scheduler.erase_user(erasure)
        await self.node.audit.erase_user(erasure)
        return erasure

    async def forget(self, erasure: Erasure) -> int:
        """After the commit: the core's Redis keys of the user (rate-limit buckets, room logs),
        then every feature's steps. Returns the Redis keys deleted."""
        removed = await self.node.limits.limiter.forget_user(erasure.user_id)
        removed += await self.node.fanout.manager.roomlog.forget_user(erasure.user_id)
        for step in erasure.steps:
            try:
                removed += await step()
            except Exception:
                log.warning("an erasure step after the commit failed", exc_info=True)
        return removed

    async def erase(
        self, user_id: str, by: Principal | str, reason: str | None = None
    ) -> dict[str, Any]:
        """Erase `user_id`. `by` is the user themself (a Principal with their id), an admin
        Principal, or an API key id; the audit entry names the pseudonym, never the id."""
        ps = self.pseudonym(user_id)
        if self.node.sio is not None:
            await self.disconnect(user_id)  # first: nothing of theirs races the transaction
        self_erase = isinstance(by, Principal) and by.user_id == user_id
        actor: Principal | str = (
            Principal(ps, by.role) if isinstance(by, Principal) and self_erase else by
        )

        async def in_transaction(conn: Any) -> Erasure:
            erased = await self.erase_rows(conn, user_id, ps)
            await self.node.audit.record(
                actor,
                "privacy.erase",
                f"user:{ps}",
                reason,
                {"by": "self" if self_erase else "admin", "rows": erased.rows},
                conn=conn,
            )
            for i, delay in enumerate(self.sweeps, 1):
                key = f"{SWEEP_JOB}:{ps}:{i}"
                sealed = self.node.keyring.seal_secret(user_id, key).hex()
                await self.node.scheduler.schedule(
                    SWEEP_JOB,
                    key,
                    utcnow() + delay,
                    {"key": key, "subject": sealed, "pseudonym": ps},
                    conn=conn,
                    replace=True,
                )
            return erased

        erased = await self._transaction(in_transaction)
        erased.add("redis keys", await self.forget(erased))
        if self.node.sio is not None:
            await self.disconnect(user_id)  # a socket that connected meanwhile
        log.warning("user erased", extra={"pseudonym": ps, "tables": len(erased.rows)})
        return {"erased": True, "pseudonym": ps, "rows": erased.rows}

    async def _transaction(self, body: Callable[[Any], Awaitable[Erasure]]) -> Erasure:
        """Run `body` in one transaction; again (at most twice) when PostgreSQL chose it as a
        deadlock victim: the erasure takes row locks across many tables in its own order."""
        for attempt in range(3):
            try:
                async with self.node.storage.db.acquire() as conn, conn.transaction():
                    return await body(conn)
            except asyncpg.DeadlockDetectedError:
                if attempt == 2:
                    raise
                log.warning("erasure hit a deadlock; retrying")
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def sweep(self, payload: dict[str, Any]) -> None:
        """Job: the same erasure again, for rows and keys written after it (late bus events,
        another node's disconnect handlers). Audited only when it found something."""
        key, ps = payload["key"], payload["pseudonym"]
        user_id = self.node.keyring.open_secret(bytes.fromhex(payload["subject"]), key)

        async def in_transaction(conn: Any) -> Erasure:
            erased = await self.erase_rows(conn, user_id, ps)
            if erased.rows:
                await self.node.audit.record(
                    "system",
                    "privacy.erase_sweep",
                    f"user:{ps}",
                    "rows written after the erasure",
                    {"rows": erased.rows},
                    conn=conn,
                )
            await self.node.scheduler.drop([key], conn=conn)
            return erased

        erased = await self._transaction(in_transaction)
        await self.forget(erased)
        if erased.rows:
            log.warning("erasure sweep found late rows", extra={"pseudonym": ps, **erased.rows})
