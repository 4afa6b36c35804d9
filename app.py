"""The composition root: the one module that imports every feature.

`compose(settings)` builds one process: the core's backends (`server.backends`), the node, then
every feature with what it needs handed in and typed — the features' own backends (in-process
or Redis) chosen here too — and, on a serving node, the five namespaces with the services they
call. Feature-to-feature needs go through small interfaces declared by the feature that needs
them (`routing.channels.telegram.TelegramOutbox`, `activity.service.Notifications`,
`bots.reports.Ledger`, `messaging.tips.TipLedger`, `messaging.attachments.AttachmentMedia`,
`media.attachment_media.AttachmentStates`, `presence.service.Visibility`,
`messaging.blocks.BlockFollower`); no feature imports another.

`create_app` wraps a composed node in the aiohttp application; `main` is the `ours` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web

import namespaces
from activity.feature import ActivityFeature
from bots import runner as bot_runner
from bots.feature import BotFeature
from bots.limiter import MemoryLimiter as MemorySendLimiter
from bots.limiter import SendLimiter
from bots.limiter_redis import RedisLimiter as RedisSendLimiter
from config import DEV_SECRETS_FILE, NothingToRun, Settings
from console.feature import ConsoleFeature
from ledger.feature import LedgerFeature
from livechat.feature import LiveChatFeature
from livechat.gate import Gate, MemoryGate
from livechat.gate_redis import RedisGate
from livechat.reactions import Flush, MemoryReactions, Reactions
from livechat.reactions_redis import RedisReactions
from media.feature import MediaFeature
from messaging.feature import MessagingFeature
from presence.backend import MemoryPresence, PresenceStore
from presence.backend_redis import RedisPresence
from presence.feature import PresenceFeature
from privacy.feature import PrivacyFeature
from routing.feature import RouterFeature
from server import banner, cli, jsonutil, logs, nodes
from server.audit import AuditLog
from server.backends import choose
from server.feature import Feature
from server.http_api import NODE, add_routes, request_context
from server.node import Node
from server.storage import Storage
from watching.counts import Counts, MemoryCounts
from watching.counts_redis import RedisCounts
from watching.feature import Watching

log = logging.getLogger("ours.app")


@dataclass(frozen=True, slots=True)
class Features:
    """Every feature of a node, by name, in start order (stopped in reverse)."""

    presence: PresenceFeature
    watching: Watching
    media: MediaFeature
    ledger: LedgerFeature
    messaging: MessagingFeature
    livechat: LiveChatFeature
    bot: BotFeature
    router: RouterFeature
    activity: ActivityFeature
    console: ConsoleFeature
    privacy: PrivacyFeature

    def all(self) -> list[Feature]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True, slots=True)
class App:
    node: Node
    features: Features


FEATURES = web.AppKey("features", Features)


def compose(settings: Settings, *, with_sockets: bool = True) -> App:
    """Build one process. Without sockets (`ours worker`, one-shot commands on Redis) emits
    reach the serving nodes through Redis."""
    s = settings
    storage = Storage(s)
    backends = choose(s, storage, with_sockets=with_sockets)
    node = Node(
        s,
        storage=storage,
        bus=backends.bus,
        limiter=backends.limiter,
        manager=backends.manager,
        redis=backends.redis,
        with_sockets=with_sockets,
    )
    redis, prefix = backends.redis, s.redis_prefix

    presence_store: PresenceStore = (
        RedisPresence(redis, prefix) if redis is not None else MemoryPresence()
    )
    counts: Counts = RedisCounts(redis, prefix) if redis is not None else MemoryCounts()
    gate: Gate = RedisGate(redis, prefix) if redis is not None else MemoryGate()

    def reactions(flush: Flush) -> Reactions:
        if redis is not None:
            return RedisReactions(redis, prefix, flush)
        return MemoryReactions(flush)

    watching = Watching(node, counts)
    media = MediaFeature(node)
    ledger = LedgerFeature(node)
    messaging = MessagingFeature(node, ledger=ledger.service, media=media.attachments)
    media.route_attachment_webhooks(messaging.service.attachments)
    # blocks hide two users from each other on /presence too: presence asks messaging's blocks
    # (`presence.service.Visibility`) and follows them (`messaging.blocks.BlockFollower`)
    presence = PresenceFeature(node, presence_store, visibility=messaging.blocks)
    messaging.blocks.follow(presence.service)
    livechat = LiveChatFeature(node, gate, reactions)
    bot = BotFeature(node, ledger=ledger.service.balance, limiter=_send_limiter(s, redis))
    router = RouterFeature(node, telegram=bot)
    activity = ActivityFeature(node, notifications=router)
    console = ConsoleFeature(node)
    privacy = PrivacyFeature(node)  # exports and erases through every feature of the node
    features = Features(
        presence,
        watching,
        media,
        ledger,
        messaging,
        livechat,
        bot,
        router,
        activity,
        console,
        privacy,
    )
    node.add_features(features.all())
    if with_sockets:
        services = namespaces.Services(
            activity=activity.service,
            chat=livechat.service,
            audio=media.audio,
            messaging=messaging.service,
            ledger=ledger.service,
            inbox=router.inbox,
            presence=presence.service,
            viewed=watching.viewed,
        )
        node.add_namespaces(namespaces.build(node, services))
    return App(node, features)


def _send_limiter(s: Settings, redis: Any) -> SendLimiter:
    """The bot's send pacing: shared by every process with this token when Redis is there."""
    if redis is not None and s.telegram_bot_token:
        bot_id = s.telegram_bot_token.split(":", 1)[0]
        return RedisSendLimiter(redis, f"{s.redis_prefix}:tg:{bot_id}")
    return MemorySendLimiter()


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application of one serving node: Socket.IO attached, every route."""
    composed = compose(settings)
    node = composed.node
    app = web.Application(
        middlewares=[request_context],
        # bodies are capped per route by read_json; this is only the outer bound
        client_max_size=max(settings.max_payload_bytes * 2, 1024 * 1024),
    )
    app[NODE] = node
    app[FEATURES] = composed.features
    assert node.sio is not None
    node.sio.attach(app)
    add_routes(app)
    for feature in node.features:
        feature.routes(app)

    async def on_startup(app: web.Application) -> None:
        await node.start()

    async def on_shutdown(app: web.Application) -> None:
        await node.drain()

    async def on_cleanup(app: web.Application) -> None:
        await node.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        loop = asyncio.new_event_loop()
    app = create_app(settings)
    url = f"http://{host}:{port}"
    app[NODE].nodes.url = url
    if logs.console_wanted(settings.log_format):

        async def greet(app: web.Application) -> None:  # after the node has started
            print(banner.text(settings, url, nodes.version()), file=sys.stderr, flush=True)

        app.on_startup.append(greet)
    elif (settings.data_dir / DEV_SECRETS_FILE).exists():
        log.warning(
            "development secrets in use: JWT secret, API key and master key are in %s",
            (settings.data_dir / DEV_SECRETS_FILE).resolve(),
        )
    log.info("serving", extra={"host": host, "port": port, "loop": type(loop).__module__})
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=settings.shutdown_timeout,
        print=lambda *_: None,
        access_log=None,
        loop=loop,
    )


# -- the `ours` command: the commands that run the node and its features --------------------


def _one_shot(settings: Settings, fn: Callable[[App], Awaitable[Any]], *, bus: bool = False) -> Any:
    """Run `fn` against a composed node with its storage open (and its bus, not consuming,
    when `bus`), without starting the features. With Redis the node has no sockets: its emits
    reach the serving nodes through Redis."""

    async def run() -> Any:
        composed = compose(settings, with_sockets=not settings.redis_url)
        node = composed.node
        await node.storage.open(migrate=True)
        try:
            if bus:  # every consumer group exists before anything is put back on the stream
                await node.bus.start(consume=False)
            return await fn(composed)
        finally:
            if bus:
                await node.bus.close()
            if node.redis is not None:
                await node.redis.aclose()
            await node.storage.close()

    return asyncio.run(run())


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    serve(settings, args.host or settings.host, args.port or settings.port)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.redis_url:
        raise NothingToRun(
            "OURS_REDIS_URL is not set: on the embedded default `ours serve` runs the consumers"
            " (exit 78, do not restart; set OURS_REDIS_URL, or drop the Procfile's `worker` line)"
        )

    async def run() -> None:
        node = compose(settings, with_sockets=False).node
        await node.start(consume=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ours worker: consuming; SIGTERM to stop", file=sys.stderr)
        await stop.wait()
        await node.stop()

    asyncio.run(run())
    return 0


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    async def run(composed: App) -> list[dict[str, Any]]:
        return list(await composed.node.bus.dead_letters(args.limit))

    for row in _one_shot(settings, run, bus=True):
        print(jsonutil.dumps(row))
    return 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    async def run(composed: App) -> int:
        count = int(await composed.node.bus.replay(args.ids or None))
        await AuditLog(composed.node.storage).record(
            "cli", "dlq.replay", None, None, {"ids": args.ids or None, "count": count}
        )
        return count

    print(f"replayed {_one_shot(settings, run, bus=True)} dead letter(s)")
    return 0


def cmd_bot(settings: Settings, args: argparse.Namespace) -> int:
    def bot_process() -> tuple[Node, BotFeature]:
        # the bot process neither serves sockets nor consumes the bus; with Redis its emits go
        # through a write-only manager, without Redis a local (unused) Socket.IO server is fine
        composed = compose(settings, with_sockets=not settings.redis_url)
        return composed.node, composed.features.bot

    return bot_runner.run(settings, bot_process, mode=args.mode, url=args.url)


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def run(composed: App) -> int:
        count = await composed.features.messaging.keys.rotate()
        await composed.node.audit.record("cli", "keys.rotate", None, None, {"rewrapped": count})
        return count

    print(f"re-wrapped {_one_shot(settings, run)} data key(s) with the current master key")
    return 0


def cmd_search_reindex(settings: Settings, args: argparse.Namespace) -> int:
    async def run(composed: App) -> dict[str, int]:
        search = composed.features.messaging.service.search
        if args.conversation:
            return {args.conversation: await search.reindex(args.conversation)}
        return await search.reindex_all()

    done = _one_shot(settings, run)
    print(f"re-indexed {sum(done.values())} message(s) in {len(done)} conversation(s)")
    return 0


def cmd_hours_grant(settings: Settings, args: argparse.Namespace) -> int:
    try:
        amount = Decimal(args.amount)
        if amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            raise InvalidOperation
    except InvalidOperation:
        print("ours hours grant: --amount must be a positive number (2 decimals)", file=sys.stderr)
        return 2

    async def run(composed: App) -> Any:
        ledger = composed.features.ledger.service
        return await ledger.grant(args.admin, args.user, amount, args.key or str(uuid.uuid4()))

    print(f"balance of {args.user}: {_one_shot(settings, run)} HOURS")
    return 0


def contract_documents(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """/v1/openapi.json and /v1/asyncapi.json as this build serves them (nothing started)."""
    from server.asyncapi import asyncapi_document
    from server.openapi import openapi_document

    return openapi_document(create_app(settings)), asyncapi_document(namespaces.ALL)


DOCS = Path(__file__).resolve().parent / "docs"


def cmd_contract(settings: Settings, args: argparse.Namespace) -> int:
    from server import reference

    openapi, asyncapi = contract_documents(settings)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, doc in (("openapi.json", openapi), ("asyncapi.json", asyncapi)):
            (out / name).write_text(json.dumps(doc, indent=2) + "\n")
            print(f"wrote {out / name}")
    stale = []
    for name, blocks in reference.blocks_by_doc(openapi, asyncapi).items():
        path = DOCS / name
        text = path.read_text()
        fresh = reference.rewrite(text, blocks, name)
        if fresh == text:
            print(f"docs/{name}: generated tables are current")
        elif args.write:
            path.write_text(fresh)
            print(f"docs/{name}: generated tables rewritten")
        else:
            stale.append(name)
    for name in stale:
        print(
            f"docs/{name}: generated tables are stale; run `ours contract --write`", file=sys.stderr
        )
    return 1 if stale else 0


def commands(sub: Any) -> None:
    c = sub.add_parser(
        "contract",
        help="check (or --write) docs/protocol.md's generated reference tables; --out DIR"
        " writes openapi.json and asyncapi.json",
    )
    c.add_argument("--write", action="store_true", help="rewrite the tables in place")
    c.add_argument("--out", default=None, help="also write the two documents into DIR")
    c.set_defaults(func=cmd_contract)

    s = sub.add_parser(
        "serve", help="run the HTTP + Socket.IO server (and, by default, the bus consumers)"
    )
    s.add_argument("--host", default=None, help="bind address (default OURS_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default OURS_PORT or 8080)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="run the bus consumers only (needs OURS_REDIS_URL)")
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("dlq", help="dead letters: list them or replay them")
    dsub = d.add_subparsers(required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="print dead letters as JSON lines")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=cmd_dlq_list)
    dr = dsub.add_parser("replay", help="put dead letters back on the bus")
    dr.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    dr.set_defaults(func=cmd_dlq_replay)

    b = sub.add_parser("bot", help="run the Telegram bot (long polling; or set the webhook)")
    b.add_argument("--mode", choices=["polling", "webhook"], default=None)
    b.add_argument("--url", default=None, help="webhook mode: public URL of the webhook route")
    b.set_defaults(func=cmd_bot)

    k = sub.add_parser("keys", help="encryption keys")
    ksub = k.add_subparsers(required=True, metavar="ACTION")
    kr = ksub.add_parser(
        "rotate",
        help="re-wrap every data key with OURS_MASTER_KEY (old keys in OURS_MASTER_KEY_PREVIOUS)",
    )
    kr.set_defaults(func=cmd_keys_rotate)

    sr = sub.add_parser("search", help="message search")
    srsub = sr.add_subparsers(required=True, metavar="ACTION")
    sri = srsub.add_parser(
        "reindex", help="rebuild the search index from the messages (all conversations, or one)"
    )
    sri.add_argument("--conversation", default=None, help="a conversation id (default: all)")
    sri.set_defaults(func=cmd_search_reindex)

    h = sub.add_parser("hours", help="HOURS ledger")
    hsub = h.add_subparsers(required=True, metavar="ACTION")
    hg = hsub.add_parser("grant", help="grant HOURS to a user (admin aid; audited)")
    hg.add_argument("--user", required=True)
    hg.add_argument("--amount", required=True)
    hg.add_argument("--key", default=None, help="idempotency key (default: a new one)")
    hg.add_argument("--admin", default="cli", help="who grants (recorded in the audit log)")
    hg.set_defaults(func=cmd_hours_grant)


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, [commands])


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
