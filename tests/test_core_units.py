"""Units of the shared core on real PostgreSQL: scheduler, audit log, crypto, policy, config."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from config import ConfigError, Settings, load_settings
from server.audit import AuditLog
from server.auth import Principal, Role
from server.crypto import DecryptError, Keyring, new_data_key, seal, unseal
from server.errors import ApiError
from server.policy import Action, require
from server.scheduler import Scheduler
from server.storage import Storage
from tests.conftest import JWT_SECRET


@pytest.fixture
async def storage(pg_dsn: str) -> Any:
    s = Storage(Settings(database_url=pg_dsn, jwt_secret=JWT_SECRET))
    await s.open(migrate=True)  # already migrated from the template: applies nothing
    yield s
    await s.close()


async def test_scheduler_runs_due_jobs_once_and_survives_restart(storage: Storage) -> None:
    ran: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload)

    now = datetime.now(UTC)
    first = Scheduler(storage, poll_interval=0.05)
    first.register("note", handler)
    assert await first.schedule("note", "k1", now - timedelta(seconds=1), {"n": 1})
    assert not await first.schedule("note", "k1", now, {"n": 99})  # same key: no second job
    await first.schedule("note", "k2", now + timedelta(seconds=0.4), {"n": 2})
    await first.schedule("note", "k3", now + timedelta(seconds=0.2), {"n": 3})
    assert await first.cancel("k3")
    # "down" until k2 is due; a new scheduler (a restarted server) catches up
    await asyncio.sleep(0.5)
    second = Scheduler(storage, poll_interval=0.05)
    second.register("note", handler)
    second.start()
    for _ in range(100):
        if len(ran) >= 2:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    await second.close()
    assert sorted(p["n"] for p in ran) == [1, 2]
    assert (await second.get("k2"))["state"] == "done"  # type: ignore[index]
    assert (await second.get("k3"))["state"] == "cancelled"  # type: ignore[index]


async def test_scheduler_retries_then_fails(storage: Storage) -> None:
    calls = 0

    async def flaky(payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("provider down")

    s = Scheduler(storage, max_attempts=2)
    s.register("x", flaky)
    await s.schedule("x", "kx", datetime.now(UTC))
    await s.run_due()
    await storage.db.execute("UPDATE jobs SET run_at = now() WHERE key = 'kx'")
    await s.run_due()
    job = await s.get("kx")
    assert job is not None and job["state"] == "failed" and calls == 2
    assert "provider down" in job["last_error"]


async def test_audit_log_is_append_only(storage: Storage) -> None:
    audit = AuditLog(storage)
    mod = Principal("m1", Role.MODERATOR)
    await audit.record(mod, "chat.ban", "user:u9", "spam", {"live_id": "l1"})
    rows = await audit.query(target="user:u9")
    assert rows[0]["actor_id"] == "m1" and rows[0]["action"] == "chat.ban"
    with pytest.raises(asyncpg.RaiseError):
        await storage.db.execute("UPDATE audit_log SET reason = 'x'")


def test_crypto_binds_ciphertext_to_its_row() -> None:
    key = new_data_key()
    sealed = seal(key, b"hello", b"conv:1|msg:1")
    assert unseal(key, sealed, b"conv:1|msg:1") == b"hello"
    with pytest.raises(DecryptError):
        unseal(key, sealed, b"conv:1|msg:2")
    ring = Keyring("22" * 32)
    wrapped = ring.wrap(key, b"conv:1")
    rotated = Keyring("33" * 32, previous_hex=["22" * 32])
    assert rotated.unwrap(wrapped, b"conv:1") == key
    with pytest.raises(DecryptError):
        Keyring("33" * 32).unwrap(wrapped, b"conv:1")


def test_policy() -> None:
    require(Principal("a", Role.ADMIN), Action.ADMIN_WRITE)
    require(Principal("h", Role.USER), Action.STAGE_MANAGE, owner=True)
    with pytest.raises(ApiError) as exc:
        require(Principal("u", Role.USER), Action.CHAT_MODERATE)
    assert exc.value.code == "forbidden"


def test_config_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OURS_MAX_PAYLOAD_BYTES"):
        load_settings(data_dir=tmp_path, max_payload_bytes=10)
    with pytest.raises(ConfigError, match="OURS_MASTER_KEY"):
        load_settings(data_dir=tmp_path, master_key="abcd")
    with pytest.raises(ConfigError, match="OURS_JWT_SECRET or OURS_JWT_PUBLIC_KEY"):
        load_settings(data_dir=tmp_path, env="production")
    s = load_settings(data_dir=tmp_path)
    again = load_settings(data_dir=tmp_path)
    assert s.jwt_secret == again.jwt_secret  # generated once, then reused
