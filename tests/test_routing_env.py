"""Shared set-up for the router's tests (no tests here): a server whose real provider SDKs
(firebase-admin, resend, twilio) point at the local fakes, an injected clock, and helpers.

    from tests.test_routing_env import *  # noqa: F403 (the env fixtures)
    from tests.test_routing_env import Env
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from routing.feature import RouterFeature
from tests.conftest import API_KEY, REDIS_URL, PgCluster, free_port, make_settings
from tests.fakes.fcm import FakeFCM
from tests.fakes.resend import FakeResend
from tests.fakes.telegram import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import FakeTwilio
from tests.helpers import Client, ServerHandle, connect, start_server

__all__ = ["env", "routing_backend", "routing_telegram"]

FROM_NUMBER = "+15005550006"


class FakeClock:
    """The router's "now": starts where a test puts it, moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def now(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t

    def set(self, t: datetime) -> None:
        self.t = t


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Env:
    server: ServerHandle
    fcm: FakeFCM
    resend: FakeResend
    twilio: FakeTwilio
    clock: FakeClock
    telegram: FakeTelegram | None = None

    @property
    def feature(self) -> RouterFeature:
        return self.server.features.router

    # -- events -----------------------------------------------------------------------------

    async def publish(
        self,
        type_: str,
        payload: dict[str, Any],
        subjects: list[str] | None = None,
        *,
        actor: str | None = None,
        event_id: str | None = None,
        wait: bool = True,
    ) -> str:
        body: dict[str, Any] = {"type": type_, "payload": payload, "subjects": subjects or []}
        if actor:
            body["actor"] = actor
        if event_id:
            body["id"] = event_id
        status, resp = await self.server.publish(body)
        assert status == 202, resp
        eid = str(resp["data"]["id"])
        if wait:
            await self.routed(eid)
        return eid

    async def routed(self, event_id: str) -> None:
        """Wait until the router handled the event (its in-app rows are out of `queued`)."""

        async def done() -> bool:
            rows = await self.feature.store.outbox.of_event(event_id)
            return bool(rows) and all(
                not (r["channel"] == "in_app" and r["state"] == "queued") for r in rows
            )

        await wait_until(done, what=f"router to handle {event_id}")

    async def settle(self) -> None:
        """Send whatever is due at the clock's now, and wait for it."""
        await self.feature.dispatcher.settle()

    async def deliveries(self, event_id: str, user: str) -> dict[str, dict[str, Any]]:
        rows = await self.feature.store.outbox.of_event(event_id)
        return {r["channel"]: r for r in rows if r["user_id"] == user}

    # -- users ------------------------------------------------------------------------------

    async def http(
        self, method: str, path: str, *, token: str | None = None, json: Any = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token or API_KEY}"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.server.url + path, json=json, headers=headers) as r,
        ):
            return r.status, await r.json()

    async def prefs(self, user: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.http(
            "PUT", "/v1/me/preferences", token=self.server.token(user), json=fields
        )
        assert status == 200, body
        return dict(body["data"])

    async def contact(self, user: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.http("PUT", f"/v1/users/{user}/contact", json=fields)
        assert status == 200, body
        return dict(body["data"])

    async def device(self, user: str, token: str, platform: str = "android") -> None:
        await self.feature.inbox.register_device(user, token, platform)

    async def socket(self, user: str) -> Client:
        return await connect(self.server.url, "/notifications", self.server.token(user))


@pytest.fixture
def routing_backend() -> str:
    """The bus backend of `env`; tests that must hold on both parametrize this name."""
    return "memory"


@pytest.fixture
def routing_telegram() -> bool:
    """Whether `env` runs the bot feature against the fake Bot API (parametrize to turn on)."""
    return False


@pytest.fixture
async def env(
    routing_backend: str,
    routing_telegram: bool,
    tmp_path: Path,
    pg_clusters: dict[str, PgCluster],
) -> AsyncIterator[Env]:
    fcm, resend, twilio = FakeFCM(), FakeResend(), FakeTwilio()
    telegram = FakeTelegram(enforce_limits=False) if routing_telegram else None
    await fcm.start(free_port())
    await resend.start(free_port())
    await twilio.start(free_port())
    overrides: dict[str, Any] = {
        "fcm_project_id": fcm.project_id,
        "fcm_credentials_file": fcm.service_account(tmp_path / "firebase-sa.json"),
        "fcm_base_url": fcm.url,
        "fcm_token_url": fcm.token_url,
        "resend_api_key": resend.api_key,
        "resend_base_url": resend.url,
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": twilio.auth_token,
        "twilio_from_number": FROM_NUMBER,
        "twilio_base_url": twilio.url,
        "router_max_attempts": 3,
        "scheduler_poll_interval": 0.1,
    }
    if telegram is not None:
        await telegram.start()
        overrides |= {"telegram_bot_token": TELEGRAM_TOKEN, "telegram_api_base": telegram.url}
    if routing_backend == "redis":
        dsn = await pg_clusters["machine"].fresh()
        settings = make_settings(tmp_path, database_url=dsn, redis_url=REDIS_URL, **overrides)
    else:
        dsn = await pg_clusters["embedded"].fresh()
        settings = make_settings(tmp_path, database_url=dsn, **overrides)
    server = await start_server(settings, free_port())
    # Monday 2030-03-04 12:00 UTC: outside the default quiet hours (23:00-08:00 UTC), and in
    # the future, so digest jobs (the scheduler runs on real time) stay pending
    clock = FakeClock(datetime(2030, 3, 4, 12, 0, tzinfo=UTC))
    env = Env(server, fcm, resend, twilio, clock, telegram)
    env.feature.clock = clock
    try:
        yield env
    finally:
        await server.stop()
        for fake in (fcm, resend, twilio, telegram):
            if fake is not None:
                await fake.stop()
