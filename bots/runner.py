"""`ours bot`: run the Telegram bot's update loop in its own process.

Polling (default): long-poll Telegram's getUpdates and answer commands until SIGTERM/SIGINT.
Webhook (OURS_TELEGRAM_MODE=webhook): register the web server's POST /v1/webhooks/telegram with
Telegram (with the secret token) and exit; `ours serve` then receives the updates.

The brief job and the alert consumer run where the bus consumers and the scheduler run
(`ours serve` or `ours worker`); this process only answers commands.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from bots.feature import BotFeature
from config import ConfigError, NothingToRun, Settings
from server.node import Node

#: builds the bot process: its node and the bot feature (the composition root does)
BotProcess = Callable[[], tuple[Node, BotFeature]]


def run(
    settings: Settings, build: BotProcess, *, mode: str | None = None, url: str | None = None
) -> int:
    if not settings.telegram_bot_token:
        raise NothingToRun(
            "OURS_TELEGRAM_BOT_TOKEN is not set: there is no bot to run (exit 78, do not"
            " restart; set the token, or drop the Procfile's `bot` line)"
        )
    mode = mode or settings.telegram_mode
    if mode == "webhook":
        url = url or settings.telegram_webhook_url
        if not url:
            raise ConfigError(
                "webhook mode needs the public URL of POST /v1/webhooks/telegram:"
                " OURS_TELEGRAM_WEBHOOK_URL or --url"
            )
        if not settings.telegram_webhook_secret:
            raise ConfigError("webhook mode needs OURS_TELEGRAM_WEBHOOK_SECRET")
    return asyncio.run(_run(build, mode, url))


async def _run(build: BotProcess, mode: str, url: str | None) -> int:
    node, feature = build()
    feature.health.report = False
    await node.start(consume=False, role="bot")
    try:
        if mode == "webhook":
            assert url is not None
            await feature.set_webhook(url)
            print(f"ours bot: webhook set to {url}; `ours serve` answers updates", file=sys.stderr)
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ours bot: long polling; SIGTERM to stop", file=sys.stderr)
        await feature.poll(stop)
        return 0
    finally:
        await node.stop()
