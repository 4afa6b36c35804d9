"""The `ours` command's core: the parser, error handling and the commands that need only the
core (migrate, token, publish, status). The commands that run the node and its features (serve,
worker, dlq, bot, keys, hours) are added by the composition root (`app.py`, whose `main` is
the `ours` entry point)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from config import ConfigError, NothingToRun, Settings, load_settings
from server import jsonutil, logs
from server.errors import ApiError

#: adds subcommands to the `ours` parser (each sets `func(settings, args) -> int`)
Commands = Callable[[Any], None]


def main(argv: list[str] | None = None, commands: Sequence[Commands] = ()) -> int:
    parser = _parser(commands)
    args = parser.parse_args(argv)
    logs.setup()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ours: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_format)
    try:
        return int(args.func(settings, args) or 0)
    except NothingToRun as exc:
        print(f"ours: {exc}", file=sys.stderr)
        return NothingToRun.exit_code
    except ConfigError as exc:
        print(f"ours: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"ours: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser(commands: Sequence[Commands]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ours", description="OURS comms real-time server")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    for add in commands:
        add(sub)

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

    st = sub.add_parser(
        "status",
        help="the cluster at a glance: nodes, bus lag per group, dead letters, scheduler, "
        "PostgreSQL and Redis (asks a running node)",
    )
    st.add_argument("--url", default=None, help="a node's URL (default http://OURS_HOST:OURS_PORT)")
    st.add_argument("--json", action="store_true", dest="as_json", help="the document as JSON")
    st.set_defaults(func=cmd_status)

    return p


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


def _api(
    settings: Settings,
    url: str | None,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Call a running node's HTTP API with the first API key: (status, body text). Raises
    OSError, with what to do next in its message, when no node answers."""
    import urllib.error
    import urllib.request

    target = (url or f"http://{settings.host}:{settings.port}").rstrip("/") + path
    all_headers = {"Authorization": f"Bearer {settings.api_keys[0]}", **(headers or {})}
    data = None
    if body is not None:
        data = jsonutil.dumpb(body)
        all_headers["Content-Type"] = "application/json"
    req = urllib.request.Request(target, data, all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        raise OSError(
            f"cannot reach {target}: {exc}; is `ours serve` running there? (--url names another)"
        ) from None


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    try:
        payload = jsonutil.loads(args.payload)
    except ValueError as exc:
        print(f"ours publish: --json is not valid JSON: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"type": args.type, "payload": payload, "subjects": args.subject}
    if args.actor:
        body["actor"] = args.actor
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    try:
        status, text = _api(settings, args.url, "POST", "/v1/events", body, headers)
    except OSError as exc:
        print(f"ours publish: {exc}", file=sys.stderr)
        return 1
    print(text, file=sys.stdout if status < 300 else sys.stderr)
    return 0 if status < 300 else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from server import cluster

    try:
        status, text = _api(settings, args.url, "GET", "/v1/admin/cluster")
    except OSError as exc:
        print(f"ours status: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"ours status: the node answered {status}: {text}", file=sys.stderr)
        return 1
    doc = jsonutil.loads(text)["data"]
    print(jsonutil.dumps(doc) if args.as_json else cluster.render(doc))
    return 0
