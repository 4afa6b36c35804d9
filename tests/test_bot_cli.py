"""`ours bot` as a real process against the fake Bot API: long polling answers /start <code>;
webhook mode registers the webhook with its secret; no token is a clear configuration error."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.links import Links
from bots.store import BotStore
from config import Settings
from server.auth import Principal, Role
from server.clock import SystemClock
from server.storage import Storage
from tests.conftest import PgCluster, make_settings
from tests.fakes.telegram import TOKEN, FakeTelegram, message_update
from tests.helpers import ROOT, settings_env, stop_process


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def cli_settings(tmp_path: Path, pg_clusters: dict[str, PgCluster]) -> Settings:
    return make_settings(tmp_path, database_url=await pg_clusters["embedded"].fresh())


def bot_env(settings: Settings, telegram: FakeTelegram, **extra: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(OURS_TELEGRAM_BOT_TOKEN=TOKEN, OURS_TELEGRAM_API_BASE=telegram.url, **extra)
    return env


def ours_bot(env: dict[str, str], settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    log = open(os.path.join(str(settings.data_dir), "bot.log"), "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "app", "bot", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )


async def test_ours_bot_long_polls_and_links_a_chat(
    cli_settings: Settings, telegram: FakeTelegram
) -> None:
    storage = Storage(cli_settings)
    await storage.open(migrate=False)
    try:
        # the code a signed-in admin got from POST /v1/me/telegram/link (same database)
        links = Links(BotStore(storage), SystemClock())
        code = await links.new_code(Principal("boss", Role.ADMIN), "Europe/Berlin")
        proc = ours_bot(bot_env(cli_settings, telegram), cli_settings)
        try:
            telegram.push_update(message_update(4242, f"/start {code.code}"))
            calls = await telegram.wait_delivered(4242, 1, timeout=30)
            assert calls[0].text is not None and "Linked to @boss (admin)" in calls[0].text
            link = await BotStore(storage).link_by_user("boss")
            assert link is not None and link.chat_id == 4242 and link.tz == "Europe/Berlin"
            methods = [c.method for c in telegram.calls]
            assert {"deleteWebhook", "setMyCommands", "getUpdates"} <= set(methods)
            assert methods.index("deleteWebhook") < methods.index("getUpdates")
        finally:
            assert stop_process(proc) == 0
    finally:
        await storage.close()


async def test_ours_bot_webhook_mode_registers_the_webhook(
    cli_settings: Settings, telegram: FakeTelegram
) -> None:
    env = bot_env(
        cli_settings,
        telegram,
        OURS_TELEGRAM_MODE="webhook",
        OURS_TELEGRAM_WEBHOOK_SECRET="s3cret-token_value",
    )
    url = "https://ours.example/v1/webhooks/telegram"
    proc = ours_bot(env, cli_settings, "--url", url)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # the fake runs on this loop
            await asyncio.sleep(0.1)
        assert proc.returncode == 0
    finally:
        stop_process(proc)
    (call,) = [c for c in telegram.calls if c.method == "setWebhook"]
    assert call.status == 200 and call.params["url"] == url
    assert call.params["secret_token"] == "s3cret-token_value"


def test_ours_bot_without_a_token_says_what_is_missing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    done = subprocess.run(
        [sys.executable, "-m", "app", "bot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 78  # EX_CONFIG: nothing to run here, a supervisor should not restart
    assert b"OURS_TELEGRAM_BOT_TOKEN is not set" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1, done.stderr
