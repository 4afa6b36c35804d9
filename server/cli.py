"""The `ours` command: serve, worker, migrate, token, publish, dlq."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from config import ConfigError, Settings, load_settings
from server import jsonutil, logs
from server.errors import ApiError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.setup()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ours: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level)
    try:
        return int(args.func(settings, args) or 0)
    except ConfigError as exc:
        print(f"ours: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"ours: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ours", description="OURS comms real-time server")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve", help="run the HTTP + Socket.IO server (and, by default, the bus consumers)"
    )
    s.add_argument("--host", default=None, help="bind address (default OURS_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default OURS_PORT or 8080)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="run the bus consumers only (needs OURS_REDIS_URL)")
    w.set_defaults(func=cmd_worker)

    m = sub.add_parser("migrate", help="apply pending database migrations")
    m.set_defaults(func=cmd_migrate)

    t = sub.add_parser("token", help="print an access JWT signed with OURS_JWT_SECRET (dev aid)")
    t.add_argument("--user", required=True, help="user id (the token's sub)")
    t.add_argument("--role", default="user", choices=["user", "creator", "moderator", "admin"])
    t.add_argument("--ttl", default="15m", help="lifetime: 30s, 15m, 2h, 1d (default 15m)")
    t.set_defaults(func=cmd_token)

    pub = sub.add_parser("publish", help="publish an event through the running server's API")
    pub.add_argument("type", help="event type, e.g. content.created")
    pub.add_argument("--json", required=True, dest="payload", help="the payload as JSON")
    pub.add_argument("--subject", action="append", default=[], help="target room (repeatable)")
    pub.add_argument("--actor", default=None)
    pub.add_argument("--idempotency-key", default=None)
    pub.add_argument("--url", default=None, help="server URL (default http://OURS_HOST:OURS_PORT)")
    pub.set_defaults(func=cmd_publish)

    b = sub.add_parser("bot", help="run the Telegram bot (long polling; or set the webhook)")
    b.add_argument("--mode", choices=["polling", "webhook"], default=None)
    b.add_argument("--url", default=None, help="webhook mode: public URL of the webhook route")
    b.set_defaults(func=cmd_bot)

    d = sub.add_parser("dlq", help="dead letters: list them or replay them")
    dsub = d.add_subparsers(required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="print dead letters as JSON lines")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=cmd_dlq_list)
    dr = dsub.add_parser("replay", help="put dead letters back on the bus")
    dr.add_argument("ids", nargs="*", help="dead-letter ids (default: all)")
    dr.set_defaults(func=cmd_dlq_replay)
    k = sub.add_parser("keys", help="encryption keys")
    ksub = k.add_subparsers(required=True, metavar="ACTION")
    kr = ksub.add_parser(
        "rotate",
        help="re-wrap every data key with OURS_MASTER_KEY (old keys in OURS_MASTER_KEY_PREVIOUS)",
    )
    kr.set_defaults(func=cmd_keys_rotate)

    h = sub.add_parser("hours", help="HOURS ledger")
    hsub = h.add_subparsers(required=True, metavar="ACTION")
    hg = hsub.add_parser("grant", help="grant HOURS to a user (admin aid; audited)")
    hg.add_argument("--user", required=True)
    hg.add_argument("--amount", required=True)
    hg.add_argument("--key", default=None, help="idempotency key (default: a new one)")
    hg.add_argument("--admin", default="cli", help="who grants (recorded in the audit log)")
    hg.set_defaults(func=cmd_hours_grant)
    return p


def _messaging(settings: Settings, fn: Any) -> Any:
    from server.node import Node

    async def run() -> Any:
        node = Node(settings, with_sockets=False) if settings.redis_url else Node(settings)
        await node.storage.open(migrate=True)
        try:
            return await fn(node.features["messaging"].service, node)  # type: ignore[attr-defined]
        finally:
            await node.storage.close()

    return asyncio.run(run())


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def run(svc: Any, node: Any) -> int:
        count = int(await svc.rotate_keys())
        await node.audit.record("cli", "keys.rotate", None, None, {"rewrapped": count})
        return count

    print(f"re-wrapped {_messaging(settings, run)} data key(s) with the current master key")
    return 0


def cmd_hours_grant(settings: Settings, args: argparse.Namespace) -> int:
    import uuid
    from decimal import Decimal, InvalidOperation

    try:
        amount = Decimal(args.amount)
        if amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            raise InvalidOperation
    except InvalidOperation:
        print("ours hours grant: --amount must be a positive number (2 decimals)", file=sys.stderr)
        return 2

    async def run(svc: Any, node: Any) -> Any:
        return await svc.grant(args.admin, args.user, amount, args.key or str(uuid.uuid4()))

    print(f"balance of {args.user}: {_messaging(settings, run)} HOURS")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from server.app import serve

    serve(settings, args.host or settings.host, args.port or settings.port)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.redis_url:
        raise ConfigError(
            "OURS_REDIS_URL is not set: in the embedded default `ours serve` runs the consumers"
        )
    from server.node import Node

    async def run() -> None:
        node = Node(settings, with_sockets=False)
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


def _with_node(settings: Settings, fn: Any) -> Any:
    from server.node import Node

    async def run() -> Any:
        node = Node(settings, with_sockets=False) if settings.redis_url else None
        if node is None:
            from server.bus_memory import MemoryBus
            from server.storage import Storage

            storage = Storage(settings)
            await storage.open(migrate=True)
            bus: Any = MemoryBus(storage)
            try:
                return await fn(storage, bus)
            finally:
                await storage.close()
        await node.start(consume=False)
        try:
            return await fn(node.storage, node.bus)
        finally:
            await node.stop()

    return asyncio.run(run())


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from server.storage import Storage

    async def run() -> list[str]:
        storage = Storage(settings)
        await storage.open(migrate=False)
        try:
            return await storage.migrate()
        finally:
            await storage.close()

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from server.auth import issue_token, parse_ttl

    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"ours token: {exc}", file=sys.stderr)
        return 2
    print(issue_token(settings, args.user, args.role, ttl))
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    try:
        payload = jsonutil.loads(args.payload)
    except ValueError as exc:
        print(f"ours publish: --json is not valid JSON: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"type": args.type, "payload": payload, "subjects": args.subject}
    if args.actor:
        body["actor"] = args.actor
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/") + "/v1/events"
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {settings.api_keys[0]}",
    }
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    req = urllib.request.Request(url, jsonutil.dumpb(body), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ours publish: cannot reach {url}: {exc}; is `ours serve` running?", file=sys.stderr)
        return 1


def cmd_bot(settings: Settings, args: argparse.Namespace) -> int:
    from bots.runner import run

    return run(settings, mode=args.mode, url=args.url)


def cmd_dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    async def run(storage: Any, bus: Any) -> list[dict[str, Any]]:
        return list(await bus.dead_letters(args.limit))

    for row in _with_node(settings, run):
        print(jsonutil.dumps(row))
    return 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    async def run(storage: Any, bus: Any) -> int:
        from server.audit import AuditLog

        count = int(await bus.replay(args.ids or None))
        await AuditLog(storage).record(
            "cli", "dlq.replay", None, None, {"ids": args.ids or None, "count": count}
        )
        return count

    count = _with_node(settings, run)
    print(f"replayed {count} dead letter(s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
