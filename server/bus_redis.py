"""Redis Streams bus: XADD with a length cap, consumer groups, XACK, reclaim of entries stuck
past a visibility timeout (XAUTOCLAIM), and a dead-letter stream after N failed deliveries.

Keys, for the stream `<stream>` (`<prefix>:events`):
  <stream>                        the events
  {<stream>}:dlq                  dead letters: the event, its group, the last error, attempts
  {<stream>}:pub:<id>             publish dedup marker (24 h)
  {<stream>}:attempts:<group>     hash event id -> failed attempts
  {<stream>}:lease:<group>        an exclusive group's holder
  <stream>:done:<group>:{<id>}    a group finished this event (7 days)

On a Redis Cluster the bus is one object on one slot: a key's slot is that of its hash tag, or of
its whole name when it has none, so `{<stream>}:...` sits with `<stream>` and every script and
transaction over the stream (publish-once, dead-lettering, XACK with the attempt counters,
replay) touches that slot alone. The done markers, the bulk of the bus's keys (one per event and
group for a week), are tagged by event instead and spread over the cluster: they need no
atomicity with the stream, because they are written before the XACK (an entry acknowledged
without its marker cannot happen; a marker without its XACK is redelivered and skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from redis.exceptions import ResponseError

from server import errors, jsonutil, logs, redis_client
from server.bus import Bus, Consumer
from server.events import Event
from server.personal_data import Erasure

log = logging.getLogger("ours.bus")

# Publish once: the dedup marker and the XADD happen atomically, or not at all.
PUBLISH_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
  return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
end
return false
"""

LEASE_MS = 5000  # an exclusive group's holder renews well within this
RETRY_S = 0.25  # a consumer loop's wait before trying an unreachable Redis again

DONE_TTL = 7 * 86400
PUBLISH_DEDUP_TTL = 86400
BATCH = 256


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        stream: str = "ours:events",
        maxlen: int = 1_000_000,
        visibility_timeout_ms: int = 30_000,
        max_deliveries: int = 5,
        block_ms: int = 1000,
        cluster: bool = False,
    ) -> None:
        super().__init__(max_deliveries)
        if cluster and ("{" in stream or "}" in stream):
            raise ValueError(f"the bus stream {stream!r} is tagged by the bus: no braces in it")
        self.redis: Any = redis_client.connect(url, cluster=cluster)  # untyped replies
        self.cluster = cluster
        self.stream = stream
        own = redis_client.tag(stream)  # the stream's slot
        self.dlq = f"{own}:dlq"
        self._pub = f"{own}:pub:"
        self._attempts = f"{own}:attempts:"
        self._lease = f"{own}:lease:"
        self.maxlen = maxlen
        self.visibility_ms = visibility_timeout_ms
        self.block_ms = block_ms
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._publish = self.redis.register_script(PUBLISH_LUA)
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[Any]] = set()  # loops blocked on Redis, safe to cancel
        self._stopping = asyncio.Event()

    async def start(self, *, consume: bool = True) -> None:
        await self._check_settings()
        for group in self.consumers:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self.redis.xgroup_create(self.stream, group, id="$", mkstream=True)
        if not consume:
            return
        for consumer in self.consumers.values():
            if consumer.exclusive:
                self._tasks.append(asyncio.create_task(self._exclusive_loop(consumer)))
            else:
                self._tasks.append(asyncio.create_task(self._read_loop(consumer)))
                self._tasks.append(asyncio.create_task(self._reclaim_loop(consumer)))

    async def close(self, grace: float = 5.0) -> None:
        self._stopping.set()
        for t in self._waiting:
            t.cancel()  # nothing read yet: nothing lost
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        await self.redis.aclose()

    async def publish(self, event: Event) -> bool:
        entry = await self._publish(
            keys=[self.stream, self._pub + event.id],
            args=[jsonutil.dumps(event.wire()), self.maxlen, PUBLISH_DEDUP_TTL],
        )
        return entry is not None

    # -- consuming --------------------------------------------------------------------------

    async def _read_loop(self, consumer: Consumer) -> None:
        while not self._stopping.is_set():
            task = asyncio.current_task()
            assert task is not None
            self._waiting.add(task)
            try:
                batches = await self.redis.xreadgroup(
                    consumer.group,
                    self.name,
                    {self.stream: ">"},
                    count=BATCH,
                    block=self.block_ms,
                )
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._ensure_group(consumer.group)
                    continue
                log.exception("xreadgroup failed", extra={"group": consumer.group})
                await asyncio.sleep(1)
                continue
            except errors.REDIS_ERRORS:
                if logs.now_and_then(f"bus:{consumer.group}"):
                    log.warning("redis unavailable; retrying", extra={"group": consumer.group})
                await asyncio.sleep(RETRY_S)
                continue
            finally:
                self._waiting.discard(task)
            for _stream, entries in batches or []:
                try:
                    await self._process_batch(consumer, entries, stop_at_failure=False)
                except errors.REDIS_ERRORS:  # they stay pending: reclaimed after the timeout
                    if logs.now_and_then(f"bus:{consumer.group}"):
                        log.warning("redis unavailable; retrying", extra={"group": consumer.group})
                    await asyncio.sleep(RETRY_S)

    async def _exclusive_loop(self, consumer: Consumer) -> None:
        """Hold the group's lease and consume in stream order; stand by while another does."""
        lease = self._lease + consumer.group
        holding = False
        while not self._stopping.is_set():
            try:
                if holding:
                    holding = await self._renew(lease)
                else:  # a lease that names this process (set before a failure) is ours too
                    holding = bool(
                        await self.redis.set(lease, self.name, nx=True, px=LEASE_MS)
                    ) or await self._renew(lease)
                    if holding:  # the last holder's unfinished entries come first
                        await self._claim_orphans(consumer)
                if not holding:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), LEASE_MS / 5000)
                    continue
                await self._read_once(consumer, block_ms=min(self.block_ms, LEASE_MS // 5))
            except asyncio.CancelledError:
                raise
            except errors.REDIS_ERRORS as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    await self._ensure_group(consumer.group)  # and keep the lease
                    continue
                if logs.now_and_then(f"bus:{consumer.group}"):
                    log.warning("redis unavailable; retrying", extra={"group": consumer.group})
                holding = False
                await asyncio.sleep(RETRY_S)
        if holding:
            with contextlib.suppress(*errors.REDIS_ERRORS):
                if await self.redis.get(lease) == self.name:
                    await self.redis.delete(lease)

    async def _check_settings(self) -> None:
        """Warn when Redis runs in a way that loses the bus: without an append-only file a
        restart drops pending events, consumer groups and room logs; an eviction policy other
        than noeviction may drop stream entries under memory pressure. On a cluster every
        primary is asked (each holds some of those keys). (Managed Redis often refuses CONFIG:
        then nothing is said.)"""
        try:
            confs = await self._config("appendonly", "maxmemory-policy")
        except errors.REDIS_ERRORS:
            return
        if any(c.get("appendonly") != "yes" for c in confs):
            log.warning(
                "redis runs without appendonly: a restart loses pending events, consumer groups"
                " and room logs (set `appendonly yes`; see docs/operations.md, Redis)"
            )
        policies = {c.get("maxmemory-policy") or "noeviction" for c in confs} - {"noeviction"}
        if policies:
            log.warning(
                "redis may evict the bus's keys under memory pressure (set"
                " `maxmemory-policy noeviction`; see docs/operations.md, Redis)",
                extra={"maxmemory_policy": ",".join(sorted(policies))},
            )

    async def _config(self, *names: str) -> list[dict[str, str]]:
        """CONFIG GET of `names` (one call each: Redis 6 takes one), per primary."""
        if self.cluster:
            await self.redis.initialize()  # the primaries are known once the slots are
        nodes = self.redis.get_primaries() if self.cluster else [None]
        confs = []
        for node in nodes:
            conf: dict[str, str] = {}
            for name in names:
                target = {} if node is None else {"target_nodes": node}
                conf.update(await self.redis.config_get(name, **target))
            confs.append(conf)
        return confs

    async def _ensure_group(self, group: str) -> None:
        """The group is gone (Redis restarted without its data, a flush, a failover to a
        replica that lagged): create it again at the start of the stream, so the events
        published since Redis came back are not skipped (done markers, when they survived,
        keep older ones from running twice)."""
        try:
            await self.redis.xgroup_create(self.stream, group, id="0", mkstream=True)
        except ResponseError:  # BUSYGROUP: another process re-created it first
            return
        except errors.REDIS_ERRORS:  # gone again: the loop will find out and retry
            return
        log.warning(
            "consumer group was missing; re-created from the start of the stream"
            " (Redis lost its data? see docs/operations.md, Redis)",
            extra={"group": group, "stream": self.stream},
        )

    async def _renew(self, lease: str) -> bool:
        if await self.redis.get(lease) != self.name:
            return False
        return bool(await self.redis.pexpire(lease, LEASE_MS))

    async def _claim_orphans(self, consumer: Consumer) -> None:
        start = "0-0"
        while True:
            start, entries, *_ = await self.redis.xautoclaim(
                self.stream,
                consumer.group,
                self.name,
                min_idle_time=0,
                start_id=start,
                count=BATCH,
            )
            for entry_id, fields in entries:
                if fields is None:
                    await self.redis.xack(self.stream, consumer.group, entry_id)
                else:
                    await self._process(consumer, entry_id, fields)
            if start == "0-0" or not entries:
                return

    async def _read_once(self, consumer: Consumer, block_ms: int) -> None:
        """One exclusive read: failed entries are retried in place, in order."""
        pending = await self.redis.xreadgroup(
            consumer.group, self.name, {self.stream: "0"}, count=BATCH
        )
        entries = pending[0][1] if pending else []
        if not entries:
            task = asyncio.current_task()
            assert task is not None
            self._waiting.add(task)
            try:
                fresh = await self.redis.xreadgroup(
                    consumer.group, self.name, {self.stream: ">"}, count=BATCH, block=block_ms
                )
            finally:
                self._waiting.discard(task)
            entries = fresh[0][1] if fresh else []
        if not await self._process_batch(consumer, entries, stop_at_failure=True):
            # an entry failed: it and those after it stay pending and come first next time
            await asyncio.sleep(min(2.0, self.visibility_ms / 1000))

    async def _reclaim_loop(self, consumer: Consumer) -> None:
        interval = max(0.05, self.visibility_ms / 2000)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            if self._stopping.is_set():
                return
            try:
                start = "0-0"
                while True:
                    result = await self.redis.xautoclaim(
                        self.stream,
                        consumer.group,
                        self.name,
                        min_idle_time=self.visibility_ms,
                        start_id=start,
                        count=BATCH,
                    )
                    start, entries = result[0], result[1]
                    for entry_id, fields in entries:
                        if fields is None:  # trimmed away while pending
                            await self.redis.xack(self.stream, consumer.group, entry_id)
                            continue
                        log.info("reclaimed stuck event", extra={"group": consumer.group})
                        await self._process(consumer, entry_id, fields)
                    if start == "0-0" or not entries:
                        break
            except asyncio.CancelledError:
                raise
            except errors.REDIS_ERRORS:
                if logs.now_and_then(f"bus:reclaim:{consumer.group}"):
                    log.warning("reclaim failed; retrying", extra={"group": consumer.group})

    async def _process(self, consumer: Consumer, entry_id: str, fields: dict[str, str]) -> None:
        await self._process_batch(consumer, [(entry_id, fields)], stop_at_failure=False)

    async def _process_batch(
        self,
        consumer: Consumer,
        entries: list[tuple[str, dict[str, str] | None]],
        *,
        stop_at_failure: bool,
    ) -> bool:
        """Handle entries in order with three round trips of bookkeeping for the lot (which
        are done, then done markers + XACK + attempt counters in one transaction), so the
        handlers run back to back and a burst's socket writes coalesce. A failed entry stays
        pending (reclaimed after the visibility timeout) or, after `max_deliveries`, goes to
        the dead letters. With `stop_at_failure`, nothing after a failed entry is handled;
        returns False when that happened."""
        group = consumer.group
        parsed: list[tuple[str, Event | None, str]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed away while pending
                parsed.append((entry_id, None, ""))
                continue
            raw = fields.get("e", "")
            try:
                parsed.append((entry_id, Event(**jsonutil.loads(raw)), raw))
            except Exception as exc:  # poison: unreadable entry, never retried
                await self._dead_letter(group, entry_id, raw, f"unreadable: {exc}", 1)
        if not parsed:
            return True
        keys = [self._done(group, e.id if e else "-") for _, e, _ in parsed]
        # the markers sit in their events' slots: one MGET per slot on a cluster
        done = await (self.redis.mget_nonatomic if self.cluster else self.redis.mget)(keys)
        acks: list[str] = []
        handled: list[str] = []
        todo: list[tuple[str, Event, str]] = []
        for (entry_id, event, raw), was_done in zip(parsed, done, strict=True):
            if event is None or was_done:
                acks.append(entry_id)
            else:
                todo.append((entry_id, event, raw))
        if await self._handle_many(consumer, [e for _, e, _ in todo]):
            acks += [entry_id for entry_id, _, _ in todo]
            handled += [e.id for _, e, _ in todo]
            todo = []
        ok = True
        for entry_id, event, raw in todo:
            try:
                await self._handle(consumer, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if errors.refusal_for_outage(exc, log) is None:  # the event's own failure
                    await self._failed(group, entry_id, event, raw, f"{type(exc).__name__}: {exc}")
                # a dependency down is not the event's fault: no attempt counted, it stays
                # pending and is handled again when reclaimed
                if stop_at_failure and await self.redis.xpending_range(
                    self.stream, group, min=entry_id, max=entry_id, count=1
                ):  # still pending (not dead-lettered): retry it before anything after it
                    ok = False
                    break
                continue
            acks.append(entry_id)
            handled.append(event.id)
        if acks:
            await self._settle(group, acks, handled)
        return ok

    def _done(self, group: str, event_id: str) -> str:
        return f"{self.stream}:done:{group}:" + redis_client.tag(event_id)

    async def _settle(self, group: str, acks: list[str], handled: list[str]) -> None:
        """Mark `handled` done for `group`, then XACK `acks` and drop their attempt counters.
        On one Redis that is one transaction; on a cluster the markers (in their events' slots)
        are written first and the XACK follows in the stream's slot."""
        markers = [self._done(group, event_id) for event_id in handled]
        if self.cluster and markers:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in markers:
                    pipe.set(key, "1", ex=DONE_TTL)
                await pipe.execute()
            markers = []
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in markers:
                pipe.set(key, "1", ex=DONE_TTL)
            pipe.xack(self.stream, group, *acks)
            if handled:
                pipe.hdel(self._attempts + group, *handled)
            await pipe.execute()

    async def _failed(self, group: str, entry_id: str, event: Event, raw: str, error: str) -> None:
        attempts = await self.redis.hincrby(self._attempts + group, event.id, 1)
        log.warning(
            "consumer attempt failed", extra={"group": group, "attempt": attempts, "error": error}
        )
        if attempts >= self.max_deliveries:
            await self._dead_letter(group, entry_id, raw, error, attempts)

    async def _dead_letter(
        self, group: str, entry_id: str, raw: str, error: str, attempts: int
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.dlq,
                {"e": raw, "group": group, "error": error[:2000], "attempts": str(attempts)},
                maxlen=self.maxlen,
                approximate=True,
            )
            pipe.xack(self.stream, group, entry_id)
            await pipe.execute()
        log.error("event dead-lettered", extra={"group": group, "error": error})

    # -- operations -------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except errors.REDIS_ERRORS:
            return False

    async def lag(self) -> dict[str, int]:
        return {g: v["lag"] + v["pending"] for g, v in (await self.groups()).items()}

    async def groups(self) -> dict[str, dict[str, int]]:
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return {g: {"lag": 0, "pending": 0} for g in self.consumers}
        return {
            g["name"]: {"lag": int(g.get("lag") or 0), "pending": int(g.get("pending") or 0)}
            for g in groups
        }

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for entry_id, f in await self.redis.xrange(self.dlq, count=limit):
            try:
                event: Any = jsonutil.loads(f["e"])
            except ValueError:
                event = f["e"]
            out.append(
                {
                    "id": entry_id,
                    "consumer": f.get("group"),
                    "event": event,
                    "error": f.get("error"),
                    "attempts": int(f.get("attempts", 0)),
                }
            )
        return out

    async def dead_letter_count(self) -> int:
        return int(await self.redis.xlen(self.dlq))

    async def erase_user(self, erasure: Erasure) -> None:
        """Nothing: the stream and its dead letters are transport buffers trimmed by MAXLEN,
        whose durable copy (the event log) is anonymized; rewriting entries under consumer
        groups would break redelivery."""

    async def replay(self, ids: list[str] | None = None) -> int:
        if ids is None:
            entries = await self.redis.xrange(self.dlq)
        else:
            entries = []
            for i in ids:
                entries += await self.redis.xrange(self.dlq, min=i, max=i)
        count = 0
        for entry_id, f in entries:
            try:
                event_id = jsonutil.loads(f["e"])["id"]
            except (ValueError, KeyError, TypeError):
                log.warning("dead letter is unreadable; left in place", extra={"entry": entry_id})
                continue
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._attempts + str(f.get("group")), event_id)
                # back on the stream: the failed group handles it; the others skip it (done)
                pipe.xadd(self.stream, {"e": f["e"]}, maxlen=self.maxlen, approximate=True)
                pipe.xdel(self.dlq, entry_id)
                await pipe.execute()
            count += 1
        return count
