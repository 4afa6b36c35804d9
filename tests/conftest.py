"""Shared fixtures: real PostgreSQL (the machine's server and the embedded pgserver one), real
Redis, servers started on real ports, and real Socket.IO clients."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from config import Settings, load_settings
from server.storage import Storage
from tests.helpers import ServerHandle, start_server

MACHINE_PG = os.environ.get("OURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OURS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: a seed node of the local Redis Cluster that scripts/test starts (scripts/redis-cluster)
REDIS_CLUSTER_URL = os.environ.get("OURS_TEST_REDIS_CLUSTER_URL", "redis://127.0.0.1:7101/0")
JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
API_KEY = "test_api_key_123"
MASTER_KEY = "11" * 32
RUN_ID = uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server; hands out a fresh migrated database per test (from a template)."""

    def __init__(self, name: str, admin_dsn: str) -> None:
        self.name = name
        self.admin_dsn = admin_dsn
        self.template = f"ours_tpl_{RUN_ID}"
        self.created: list[str] = []

    def dsn(self, db: str) -> str:
        base, _, query = self.admin_dsn.partition("?")
        base = base.rsplit("/", 1)[0] + "/" + db
        return base + ("?" + query if query else "")

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        storage = Storage(Settings(database_url=self.dsn(self.template), jwt_secret=JWT_SECRET))
        await storage.open(migrate=True)
        await storage.close()

    async def fresh(self) -> str:
        db = f"ours_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{db}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        self.created.append(db)
        return self.dsn(db)

    async def teardown(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for db in [*self.created, self.template]:
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_clusters() -> AsyncIterator[dict[str, PgCluster]]:
    from server import embedded_pg

    tmp = Path(tempfile.mkdtemp(prefix="ours-embedded-"))
    dsn, handle = await embedded_pg.start(tmp)
    clusters = {"machine": PgCluster("machine", MACHINE_PG), "embedded": PgCluster("embedded", dsn)}
    for c in clusters.values():
        await c.setup()
    yield clusters
    for c in clusters.values():
        await c.teardown()
    await embedded_pg.stop(handle)


@pytest.fixture(params=["machine", "embedded"])
async def pg_dsn(request: pytest.FixtureRequest, pg_clusters: dict[str, PgCluster]) -> str:
    """A fresh, migrated database on each real PostgreSQL."""
    return await pg_clusters[request.param].fresh()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "env": "test",
        "data_dir": tmp_path,
        "jwt_secret": JWT_SECRET,
        "api_keys": [API_KEY],
        "master_key": MASTER_KEY,
        "redis_prefix": f"t{RUN_ID}{uuid.uuid4().hex[:8]}",
        "bus_visibility_timeout_ms": 500,
        "bus_max_deliveries": 3,
        "shutdown_timeout": 3,
        "log_level": "WARNING",
        "check_contract": True,
        # tests connect hundreds of clients from one IP; test_rate_limits sets real limits
        "rate_user_per_min": 1_000_000,
        "rate_ip_per_min": 1_000_000,
        "rate_connect_per_min": 1_000_000,
    }
    base.update(overrides)
    return load_settings(**base)


BACKENDS = ("memory", "redis")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): the backends a test that takes `backend` runs on, of memory, redis"
        " and cluster (default: memory and redis)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        for m in metafunc.definition.iter_markers("parametrize"):
            if "backend" in str(m.args[0]).replace(" ", "").split(","):
                return  # the test names its backends itself
        marker = metafunc.definition.get_closest_marker("backends")
        names = marker.args if marker else BACKENDS
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend: in-process (embedded PostgreSQL), Redis (machine PostgreSQL) or the local
    Redis Cluster (machine PostgreSQL). `@pytest.mark.backends(...)` picks them per test or
    module; the default is memory and redis."""
    return str(request.param)


def redis_settings(backend: str) -> dict[str, Any]:
    """The Redis settings of a backend (none for memory)."""
    if backend == "cluster":
        return {"redis_url": REDIS_CLUSTER_URL, "redis_cluster": True}
    if backend == "redis":
        return {"redis_url": REDIS_URL}
    return {}


@pytest.fixture
async def settings(backend: str, tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> Settings:
    if backend != "memory":
        dsn = await pg_clusters["machine"].fresh()
        return make_settings(tmp_path, database_url=dsn, **redis_settings(backend))
    dsn = await pg_clusters["embedded"].fresh()
    return make_settings(tmp_path, database_url=dsn)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[ServerHandle]:
    handle = await start_server(settings, free_port())
    yield handle
    await handle.stop()


CONTRACT_ERRORS = (
    "sent data does not match the contract",
    "server event sent but not declared",
)


@pytest.fixture(autouse=True)
def sends_what_it_declares(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every server a test starts checks what it sends against its documents
    (`check_contract`): an ack, server event or HTTP answer that does not match its declaration,
    or a server event that is not declared, fails the test that made the server send it — in
    this process, and in the logs of the `ours` processes it spawned in its tmp_path."""
    from server import contract, server_events

    seen, undeclared = len(contract.VIOLATIONS), set(server_events.UNDECLARED)
    # asked for now, so that it is torn down after this fixture has read the logs
    tmp = Path(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else None
    yield
    new = contract.VIOLATIONS[seen:]
    sent = server_events.UNDECLARED - undeclared
    if tmp is not None:
        for log in tmp.rglob("server-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if any(e in line for e in CONTRACT_ERRORS):
                    new.append(f"{log.name}: {line[:1000]}")
    if new or sent:
        lines = [*new, *(f"server event {name}: sent but not declared" for name in sorted(sent))]
        pytest.fail("the server sent what its documents do not say:\n" + "\n".join(lines))
