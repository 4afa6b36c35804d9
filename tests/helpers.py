"""Test helpers: servers on real ports (in-process or `ours serve` subprocesses) and real
python-socketio clients that record what they receive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio
from aiohttp import web

from app import FEATURES, Features, create_app
from config import Settings
from server.auth import issue_token
from server.http_api import NODE
from server.node import Node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class ServerHandle:
    settings: Settings
    port: int
    runner: web.AppRunner | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node(self) -> Node:
        assert self.runner is not None, "subprocess servers have no in-process node"
        return self.runner.app[NODE]

    @property
    def features(self) -> Features:
        assert self.runner is not None, "subprocess servers have no in-process features"
        return self.runner.app[FEATURES]

    def token(self, user: str, role: str = "user", ttl: float = 600) -> str:
        return issue_token(self.settings, user, role, ttl)

    async def publish(
        self, body: dict[str, Any], *, key: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        hdrs = {"Authorization": f"Bearer {key or self.settings.api_keys[0]}"}
        hdrs.update(headers or {})
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url + "/v1/events", json=body, headers=hdrs) as r,
        ):
            return r.status, await r.json()

    async def stop(self) -> None:
        if self.runner is not None:
            # bounded: a hang here fails this test's teardown instead of the whole run
            await asyncio.wait_for(self.runner.cleanup(), 60)
            self.runner = None
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


async def start_server(settings: Settings, port: int) -> ServerHandle:
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return ServerHandle(settings, port, runner=runner)


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OURS_")}
    env.update(
        {
            "OURS_ENV": settings.env,
            "OURS_DATA_DIR": str(settings.data_dir),
            "OURS_JWT_SECRET": settings.jwt_secret or "",
            "OURS_API_KEYS": ",".join(settings.api_keys),
            "OURS_MASTER_KEY": settings.master_key or "",
            "OURS_REDIS_PREFIX": settings.redis_prefix,
            "OURS_BUS_VISIBILITY_TIMEOUT_MS": str(settings.bus_visibility_timeout_ms),
            "OURS_BUS_MAX_DELIVERIES": str(settings.bus_max_deliveries),
            "OURS_SHUTDOWN_TIMEOUT": str(settings.shutdown_timeout),
            "OURS_NODE_HEARTBEAT_S": str(settings.node_heartbeat_s),
            "OURS_LOG_LEVEL": "WARNING",
            "OURS_CHECK_CONTRACT": "1" if settings.check_contract else "0",
            "OURS_RATE_USER_PER_MIN": str(settings.rate_user_per_min),
            "OURS_RATE_IP_PER_MIN": str(settings.rate_ip_per_min),
            "OURS_RATE_CONNECT_PER_MIN": str(settings.rate_connect_per_min),
        }
    )
    if settings.redis_url:
        env["OURS_REDIS_URL"] = settings.redis_url
    if settings.database_url:
        env["OURS_DATABASE_URL"] = settings.database_url
    # every other setting the test changed from its default (providers pointed at fakes, ...)
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        key, value = f"OURS_{name.upper()}", getattr(settings, name)
        if key in env or value is None or value == getattr(defaults, name, None):
            continue
        if isinstance(value, list):
            env[key] = ",".join(map(str, value))
        elif isinstance(value, dict):
            env[key] = json.dumps(value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    return env


async def spawn_server(settings: Settings, port: int, *args: str) -> ServerHandle:
    """Start `ours serve` (or another `ours` command) as a real process; wait for /health."""
    cmd = [sys.executable, "-m", "app", *(args or ("serve",))]
    if not args:
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log = open(os.path.join(str(settings.data_dir), f"server-{port}.log"), "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=settings_env(settings), stdout=log, stderr=log)
    handle = ServerHandle(settings, port, proc=proc)
    if not args:
        await wait_http(f"{handle.url}/health", proc)
    return handle


async def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15
) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@dataclass
class Client:
    """A real python-socketio AsyncClient on one namespace that records received events."""

    sio: socketio.AsyncClient
    namespace: str
    received: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    #: the meta argument of room events ({"offsets": {room: offset}}), per event name
    meta: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    _waiters: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))

    async def call(self, event: str, data: Any = None, timeout: float = 5) -> Any:
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received[event]) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.namespace}: got {len(self.received[event])}/{count} {event!r}"
                )
            self._waiters[event].clear()
            try:
                await asyncio.wait_for(self._waiters[event].wait(), remaining)
            except TimeoutError:
                pass
        return self.received[event]

    async def close(self) -> None:
        await self.sio.disconnect()


async def ok(c: Client, event: str, data: Any = None) -> Any:
    """Send `event` and return its ack's data; the ack must say ok."""
    ack = await c.call(event, data)
    assert ack["ok"], ack
    return ack["data"]


async def err(c: Client, event: str, data: Any = None) -> str:
    """Send `event` and return its error ack's code; the ack must be an error."""
    ack = await c.call(event, data)
    assert ack["ok"] is False, ack
    return str(ack["error"]["code"])


async def connect(
    url: str, namespace: str, token: str | None, *, auth: dict[str, Any] | None = None
) -> Client:
    sio = socketio.AsyncClient(reconnection=False)
    client = Client(sio, namespace)

    async def catch_all(event: str, *args: Any) -> None:
        client.received[event].append(args[0] if args else None)
        client.meta[event].append(args[1] if len(args) > 1 else None)
        client._waiters[event].set()

    sio.on("*", catch_all, namespace=namespace)
    payload = dict(auth or {})
    if token is not None:
        payload["token"] = token
    await sio.connect(
        url, namespaces=[namespace], auth=payload, transports=["websocket"], wait_timeout=15
    )
    return client


async def connect_error(url: str, namespace: str, auth: Any) -> Any:
    """Try to connect; return the connect_error data the server sent."""
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    sio.on("connect_error", lambda data: errors.append(data), namespace=namespace)
    try:
        await sio.connect(
            url, namespaces=[namespace], auth=auth, transports=["websocket"], wait_timeout=3
        )
    except socketio.exceptions.ConnectionError:
        pass
    else:
        await sio.disconnect()
        raise AssertionError("connection was accepted")
    finally:
        await sio.disconnect()
    if not errors:
        return None
    # python-socketio hands over {message, data}; `data` is what JS clients see as err.data
    assert isinstance(errors[0], dict) and "data" in errors[0], errors[0]
    return errors[0]["data"]


def probe_event(name: str) -> str:
    """A server event a test sends through fan-out only to watch it travel (not part of the
    protocol, so not declared): the contract check lets it pass."""
    from server.server_events import PROBES

    PROBES.add(name)
    return name


class Balancer:
    """A TCP load balancer in front of `ours serve` nodes, as a deployment's: each new
    connection goes to the next node (round robin) that accepts it — a dead or draining node
    refuses, so a client that reconnects lands on a live one — and when either side closes,
    the other is closed too (a killed node's clients see their transport close). `taken`
    counts the connections each node got."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = list(ports)
        self.port = 0
        self.taken: dict[int, int] = {p: 0 for p in ports}
        self._next = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            for _ in range(len(self.ports)):
                port = self.ports[self._next % len(self.ports)]
                self._next += 1
                try:
                    up_reader, up_writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), 2
                    )
                except (OSError, TimeoutError):
                    continue  # refused: the next node
                self.taken[port] += 1
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
                return
            writer.close()  # no node took it: the client retries, as with a real balancer
        finally:
            self._pipes.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()
