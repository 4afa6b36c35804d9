"""The node: one process of OURS comms. It owns the settings, storage, bus, Socket.IO server and
fan-out, runs the features it is given, and runs the start-up and graceful shutdown sequence.

The node imports no feature and no backend: the composition root (`app.py`) chooses the
backends (in-process or Redis), builds the features with what each needs, and hands them here
(`add_features`, `add_namespaces`), as centrifuge's `NewNode` + `SetBroker` do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import socketio

from config import Settings
from server import contract, metrics
from server.audit import AuditLog
from server.auth import TokenVerifier
from server.bus import Bus
from server.crypto import Keyring
from server.eventlog import EventLog
from server.fanout import Fanout
from server.feature import Feature
from server.jsonutil import SocketJSON
from server.nodes import LAG_PROBE_S, Identity, Nodes
from server.periodic import Periodic
from server.ratelimit import Limiter, RateLimits
from server.scheduler import Scheduler
from server.server_events import SERVER_SHUTDOWN
from server.sockets import Namespace
from server.storage import Storage
from server.transport import FastWebSocket

log = logging.getLogger("ours.node")


class Node:
    """One process. `manager` is the Socket.IO client manager (local or Redis); without
    sockets (`ours worker`) it is the serving nodes' manager, write-only, and fan-out emits
    through it. `redis` is the process's one shared Redis client (None on the embedded
    default): features and the limiter use it instead of opening their own."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage,
        bus: Bus,
        limiter: Limiter,
        manager: Any,
        redis: Any = None,
        with_sockets: bool = True,
    ) -> None:
        self.settings = settings
        contract.ENABLED = contract.ENABLED or settings.check_contract
        self.started_at = time.time()
        self.storage = storage
        self.events = EventLog(storage)
        self.bus = bus
        self.redis = redis
        self.verifier = TokenVerifier(settings)
        self.keyring = Keyring(settings.master_key or "", settings.master_key_previous)
        self.scheduler = Scheduler(self.storage, poll_interval=settings.scheduler_poll_interval)
        self.audit = AuditLog(self.storage)
        self.limits = RateLimits(settings, limiter)
        self.with_sockets = with_sockets
        self.consuming = False
        self.draining = False
        self.inflight = 0  # client events being handled (drained before shutdown)
        self.sweep_interval = 5.0  # expired-token sweep and dead-letter count
        self.backlog = 0  # fan-out events published but not yet delivered (sampled each second)
        self.sio: socketio.AsyncServer | None = None
        self.namespaces: dict[str, Namespace] = {}
        self.features: list[Feature] = []
        self.periodic = Periodic()  # this node's periodic jobs, features' included
        # this node's heartbeat row; its role is settled at start (`ours bot` says "bot")
        self.nodes = Nodes(
            storage,
            Identity.here("serve" if with_sockets else "worker"),
            self.stats,
            interval=settings.node_heartbeat_s,
        )
        self._last_sweep = 0.0
        if with_sockets:
            self.sio = self._make_sio(manager)
        # `ours worker` has no sockets: its emits reach the serving nodes through Redis
        self.fanout = Fanout(
            manager, settings.backpressure_wait_s, max_delay_s=settings.fanout_max_delay_s
        )
        self.bus.subscribe(
            "fanout",
            self.fanout.deliver,
            exclusive=True,
            many=self.fanout.deliver_many if self.fanout.batches else None,
        )
        if settings.redis_url:  # the in-process bus writes the log itself on publish
            self.bus.subscribe("eventlog", self._log_event)

    def add_features(self, features: Iterable[Feature]) -> None:
        """The features this node runs, in start order (stopped in reverse)."""
        self.features.extend(features)

    def add_namespaces(self, namespaces: Iterable[Namespace]) -> None:
        assert self.sio is not None, "a node without sockets has no namespaces"
        for ns in namespaces:
            assert ns.namespace is not None
            self.namespaces[ns.namespace] = ns
            self.sio.register_namespace(ns)

    def _make_sio(self, manager: Any) -> socketio.AsyncServer:
        s = self.settings
        sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=manager,
            json=SocketJSON,
            cors_allowed_origins=s.cors_origins if s.cors_origins != ["*"] else "*",
            # transport-level ceiling; the per-event cap (max_payload_bytes) answers with an
            # error ack, while a frame over this ceiling closes the transport
            max_http_buffer_size=max(1_000_000, s.max_payload_bytes * 4),
            ping_interval=25,
            ping_timeout=20,
            logger=False,
            engineio_logger=False,
        )
        # the fast path needs each websocket's transport (server/transport.py)
        sio.eio._async = {**sio.eio._async, "websocket": FastWebSocket}
        return sio

    async def _log_event(self, event: Any) -> None:
        await self.events.append(event)

    @property
    def consumes(self) -> bool:
        if self.settings.run_consumers is not None:
            return self.settings.run_consumers
        return True

    async def start(self, *, consume: bool | None = None, role: str | None = None) -> None:
        """Open storage and the bus, start the features (and, where this node consumes, the
        scheduler), then the periodic jobs and the heartbeat; `role` names the process in the
        cluster view (default: serve, or worker without sockets)."""
        if role is not None:
            self.nodes.me = Identity.here(role)
        await self.storage.open(migrate=True)
        consume = self.consumes if consume is None else consume
        self.consuming = consume  # features with background senders run only where this is set
        await self.bus.start(consume=consume)
        for feature in self.features:
            await feature.start()
        if consume:
            self.scheduler.start()
        self.periodic.every(1.0, "node.sample", self._sample)
        self.periodic.every(LAG_PROBE_S, "node.loop_lag", self._probe_loop)
        self.periodic.every(lambda: self.nodes.interval, "node.heartbeat", self.nodes.beat)
        await self.nodes.beat()  # in the cluster view from the first second
        log.info(
            "node started",
            extra={
                "bus": "redis" if self.settings.redis_url else "in-process",
                "storage": "postgresql" if self.settings.database_url else "embedded postgresql",
            },
        )

    async def drain(self) -> None:
        """Stop taking connections, tell clients to reconnect elsewhere, disconnect them."""
        if self.draining or self.sio is None:
            return
        self.draining = True
        for path in self.namespaces:
            await self.sio.emit(
                SERVER_SHUTDOWN,
                {"reason": "server restarting", "reconnect": True},
                namespace=path,
                ignore_queue=True,
            )
        await self._wait_inflight(self.settings.shutdown_timeout / 2)
        # close every transport (not a Socket.IO disconnect): clients see "transport close"
        # and reconnect, through the load balancer, to another process
        sockets = list(self.sio.eio.sockets.values())
        if sockets:
            # a long-polling client that went away never collects its CLOSE packet: do not
            # wait for it past the budget
            _, late = await asyncio.wait(
                [asyncio.ensure_future(s.close(wait=True)) for s in sockets],
                timeout=self.settings.shutdown_timeout / 4,
            )
            for task in late:
                task.cancel()
        await self.sio.shutdown()

    async def _wait_inflight(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # let the last acks reach the transport

    async def stop(self) -> None:
        """Stop in reverse order of start; a step that hangs is abandoned after a bound
        (named in the log) so the process always exits."""
        steps: list[tuple[str, Any]] = [
            ("periodic jobs", self.periodic.stop),
            ("heartbeat", self.nodes.leave),
            ("scheduler", self.scheduler.close),
        ]
        steps += [(f"feature {f.name}", f.stop) for f in reversed(self.features)]
        steps += [("bus", self.bus.close), ("storage", self.storage.close)]
        if self.redis is not None:
            steps.append(("redis", self.redis.aclose))
        bound = max(2.0, self.settings.shutdown_timeout)
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), bound)
            except TimeoutError:
                log.error("stop step timed out; abandoned", extra={"step": name})
            except Exception:
                log.exception("stop step failed", extra={"step": name})
        log.info("node stopped")

    # -- what this node carries (the heartbeat, the bot's /status) ---------------------------

    def connections(self) -> dict[str, int]:
        """Connected sockets per namespace on this node (verified principals)."""
        return {path: len(ns.principals) for path, ns in sorted(self.namespaces.items())}

    def users(self) -> set[str]:
        """The users with at least one socket on this node."""
        return {p.user_id for ns in self.namespaces.values() for p in ns.principals.values()}

    def stats(self) -> dict[str, Any]:
        """This node's numbers for its heartbeat row (server/nodes.py)."""
        rooms = 0
        if self.sio is not None:  # named rooms (`zone:music`), not each socket's own room
            for named in self.sio.manager.rooms.values():
                rooms += sum(1 for r in named if isinstance(r, str) and ":" in r)
        handled = sum(
            s.value
            for family in metrics.EVENTS_CONSUMED.collect()
            for s in family.samples
            if s.name.endswith("_total")
        )
        return {
            "connections": self.connections(),
            "users": len(self.users()),
            "rooms": rooms,
            "events_handled": int(handled),
            "backlog": self.backlog,
            "consuming": self.consuming,
            "draining": self.draining,
        }

    async def _probe_loop(self) -> None:
        self.nodes.probe_loop()

    async def _sample(self) -> None:
        """Every second: consumer lag (for metrics and publish backpressure); every
        `sweep_interval`: expired tokens and the dead-letter count."""
        now = time.time()
        try:
            lags = await self.bus.lag()
            for group, lag in lags.items():
                metrics.CONSUMER_LAG.labels(group).set(lag)
            self.backlog = lags.get("fanout", 0)
        except Exception:
            log.debug("lag sample failed", exc_info=True)
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        for ns in self.namespaces.values():
            try:
                await ns.expire_tokens(now)
            except Exception:
                log.warning("token expiry sweep failed", exc_info=True)
        try:
            metrics.DEAD_LETTERS.set(await self.bus.dead_letter_count())
        except Exception:
            log.debug("metrics sample failed", exc_info=True)
