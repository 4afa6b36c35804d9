"""What the fault tests share: a Redis, a Redis Cluster and a PostgreSQL of the test's own
(killed and restarted at will; never the machine's shared ones), the platform's steady
publisher, and the check that every event answered 202 reached every client once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests import jsclient
from tests.helpers import ROOT, ServerHandle

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class OwnRedis:
    """A redis-server of this test's own, with or without its data (an append-only file in
    `dir`) when it comes back."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, keep_data: bool) -> None:
        if not keep_data:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True
        )
        return done.stdout.strip()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None


@dataclass
class OwnCluster:
    """A Redis Cluster of this test's own (`scripts/redis-cluster` on six ports from `port`:
    three primaries, a replica each), whose nodes the test may stop."""

    port: int

    def start(self) -> str:
        """Start it (or find it healthy) and wait for every replica to hold its primary's data
        (a replica that never synced is not promoted); the seed URL."""
        url = self._script("start")
        deadline = time.monotonic() + 30
        for port in range(self.port, self.port + 6):
            while "role:master" not in (info := self._info(port)):
                if "master_link_status:up" in info:
                    break
                assert time.monotonic() < deadline, f"replica on {port} did not sync"
                time.sleep(0.1)
        return url

    def _info(self, port: int) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "info", "replication"], capture_output=True, text=True
        )
        return done.stdout

    def stop(self) -> None:
        self._script("stop")

    def shutdown(self, address: str) -> None:
        """Stop one node (`host:port`) the way a crash would, without saving."""
        host, port = address.rsplit(":", 1)
        subprocess.run(["redis-cli", "-h", host, "-p", port, "shutdown", "nosave"], timeout=10)

    def _script(self, action: str) -> str:
        done = subprocess.run(
            ["scripts/redis-cluster", action],
            cwd=ROOT,
            env={**os.environ, "OURS_CLUSTER_PORT": str(self.port)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()


class OwnPostgres:
    """A PostgreSQL of this test's own (pgserver, in `dir`): stopped the hard way (immediate
    shutdown: connections cut, crash recovery at the next start) and started again on the same
    socket, so the nodes' DSN stays valid."""

    def __init__(self, dir: Path) -> None:
        import pgserver

        self.server: Any = pgserver.get_server(dir, cleanup_mode="stop")
        self.dsn: str = self.server.get_uri()

    def kill(self) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=10,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.dsn

    def close(self) -> None:
        self.server.cleanup()


def created(n: int) -> dict[str, object]:
    return {
        "type": "content.created",
        "subjects": ["zone:music"],
        "payload": {"content_id": f"c_{n}", "kind": "post"},
    }


async def publish_until_accepted(node: ServerHandle, n: int, timeout: float) -> str:
    """Publish event n until it is answered 202; every other answer must be a 503."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await node.publish(created(n))
        if status == 202:
            return str(body["data"]["id"])
        assert status == 503, (status, body)
        assert time.monotonic() < deadline, "publishing did not resume"
        await asyncio.sleep(0.1)


@dataclass
class SteadyPublisher:
    """The platform publishing `created(n)` about 20 times a second, round robin over `nodes`,
    until stopped; records (when answered, status, event id) and fails on a publish that took
    over 10 s."""

    nodes: list[ServerHandle]
    answered: list[tuple[float, int, str | None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        n = 0
        async with aiohttp.ClientSession() as http:
            while not self._stop.is_set():
                node = self.nodes[n % len(self.nodes)]
                t0 = time.monotonic()
                async with http.post(
                    node.url + "/v1/events",
                    json=created(n),
                    headers={"Authorization": f"Bearer {node.settings.api_keys[0]}"},
                ) as r:
                    body = await r.json()
                    assert time.monotonic() - t0 < 10, "a publish took over 10 s"
                    eid = body["data"]["id"] if r.status == 202 else None
                    self.answered.append((time.monotonic(), r.status, eid))
                n += 1
                await asyncio.sleep(0.05)

    def accepted(self, after: float = 0.0) -> list[str]:
        return [e for t, s, e in self.answered if s == 202 and e is not None and t > after]

    def assert_no_500s(self, *, outage_seen: bool = True) -> None:
        """Every publish answered 202 or 503 (and with `outage_seen`, some 503)."""
        statuses = {s for _, s, _ in self.answered}
        assert statuses <= {202, 503}, statuses
        if outage_seen:
            assert 503 in statuses, "the outage was not seen"


async def assert_every_client_got(
    js: jsclient.JsClients, clients: list[str], wanted: list[str], timeout: float = 10
) -> None:
    """Every client received each of `wanted` (event ids of `content.created`), none twice."""
    for cid in clients:
        deadline = time.monotonic() + timeout
        while True:
            got = [e["id"] for e in await js.received(cid, "content.created")]
            if set(wanted) <= set(got):
                break
            missing = len(set(wanted) - set(got))
            assert time.monotonic() < deadline, (cid, missing, "events answered 202 never came")
            await asyncio.sleep(0.2)
        assert len(got) == len(set(got)), f"{cid}: an event arrived twice"


async def js_listeners(
    js: jsclient.JsClients, nodes: list[ServerHandle], per_node: int = 2
) -> list[str]:
    """`per_node` official JS clients on each node, in `zone:music` on /feed."""
    clients = []
    for i, node in enumerate(nodes * per_node):
        cid, res = await js.connect(node.url, "/feed", {"token": node.token(f"js{i}")})
        assert res["ok"], res
        assert (await js.emit(cid, "room:join", {"room": "zone:music"}))["ok"]
        clients.append(cid)
    return clients
