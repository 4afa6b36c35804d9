"""bench/notify: one event to 10,000 followers through the notification router (in-app + push).

Starts, each in its own process: the fake FCM (bench/notify/fake_fcm.py) and `ours serve`
(real firebase-admin pointed at the fake; a fresh database on the machine's PostgreSQL; the
in-process bus, or Redis Streams with --redis). Registers one push device per follower and
turns their quiet hours off (direct SQL: set-up, not measured), connects a sample of followers'
sockets on /notifications, then publishes the `live.started` of one host to all followers and
waits until every in-app row is delivered and every push arrived at the fake.

Fan-out source: the platform owns the follower set. By default it registers it as an audience
(PATCH /v1/audiences/{id}/members in pages of 450, not measured) and publishes ONE
`live.started` naming it (`"audience": ...`). With --envelopes (the old way, and the only one
old code knows) the event is published as N/100 envelopes with 100 `user:` subjects each.

About 1% of followers' devices get `gone-` tokens (the fake answers 404 UNREGISTERED for
them); the fake is started with --throttle-every 50 when it knows that option. Checks: every
follower has exactly one inbox row, every live token reached the fake exactly once (when the
fake reports per-token counts), and the `gone-` devices were removed.

    bench/notify/run --followers 100000 --sockets 200 [--redis] [--envelopes] [--out ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import socketio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import free_port, kill_group, log  # noqa: E402

from server.auth import issue_token  # noqa: E402
from tests.conftest import make_settings  # noqa: E402

common.set_log_name("notify")

PG = os.environ.get("OURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("OURS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUBJECTS_PER_EVENT = 100


def dsn_for(db: str) -> str:
    return PG.rsplit("/", 1)[0] + "/" + db


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


def spawn(cmd: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen[bytes]:
    out = open(logfile, "ab")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    kill_group(proc, 15)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ours-bench-notify-"))
    db = f"ours_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    fcm_port, port = free_port(), free_port()
    sa = tmp / "firebase-sa.json"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OURS_")}
    throttle = []
    if "--throttle-every" in (HERE / "fake_fcm.py").read_text():
        throttle = ["--throttle-every", str(args.throttle_every)]
    fake = spawn(
        [
            sys.executable,
            "-m",
            "bench.notify.fake_fcm",
            "--port",
            str(fcm_port),
            "--service-account",
            str(sa),
            *throttle,
        ],
        base_env,
        tmp / "fake_fcm.log",
    )
    settings = make_settings(tmp, database_url=dsn_for(db))
    env = {
        **base_env,
        "OURS_ENV": "test",
        "OURS_DATA_DIR": str(tmp),
        "OURS_DATABASE_URL": dsn_for(db),
        "OURS_JWT_SECRET": settings.jwt_secret or "",
        "OURS_API_KEYS": settings.api_keys[0],
        "OURS_MASTER_KEY": settings.master_key or "",
        "OURS_LOG_LEVEL": "WARNING",
        "OURS_FCM_PROJECT_ID": "ours-bench",
        "OURS_FCM_CREDENTIALS_FILE": str(sa),
        "OURS_FCM_BASE_URL": f"http://127.0.0.1:{fcm_port}",
        "OURS_FCM_TOKEN_URL": f"http://127.0.0.1:{fcm_port}/token",
        "OURS_REDIS_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        # one machine plays every client: lift the per-IP limits (connects, requests)
        "OURS_RATE_CONNECT_PER_MIN": "1000000",
        "OURS_RATE_IP_PER_MIN": "1000000",
    }
    if args.redis:
        env["OURS_REDIS_URL"] = REDIS
    server: subprocess.Popen[bytes] | None = None
    clients: list[socketio.AsyncClient] = []
    try:
        await wait_http(f"http://127.0.0.1:{fcm_port}/_stats")
        server = spawn(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            tmp / "server.log",
        )
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/health")
        n = args.followers
        users = [f"f{i:05d}" for i in range(n)]
        conn = await asyncpg.connect(dsn_for(db))
        gone = set(users[:: max(1, args.gone_every)]) if args.gone_every else set()
        tokens = {u: f"{'gone' if u in gone else 'tok'}-{u}-{secrets.token_hex(8)}" for u in users}
        await conn.copy_records_to_table(
            "push_devices",
            records=[(tokens[u], u, "android") for u in users],
            columns=["token", "user_id", "platform"],
        )
        prefs = json.dumps({"quiet_hours": {"enabled": False, "start": "23:00", "end": "08:00"}})
        await conn.execute(
            "INSERT INTO notification_prefs (user_id, prefs)"
            " SELECT u, $2::jsonb FROM unnest($1::text[]) AS u",
            users,
            prefs,
        )
        log(f"{n} followers with one push device each; connecting {args.sockets} sockets")

        arrivals: list[float] = []
        for u in users[: args.sockets]:
            sio = socketio.AsyncClient(reconnection=False)

            async def on_new(*data: Any) -> None:
                arrivals.append(time.time())

            sio.on("notification:new", on_new, namespace="/notifications")
            await sio.connect(
                url,
                namespaces=["/notifications"],
                transports=["websocket"],
                auth={"token": issue_token(settings, u, ttl=3600)},
            )
            clients.append(sio)

        live = {"live_id": "l_bench", "host_id": "host", "title": "Late set"}
        headers = {"Authorization": f"Bearer {settings.api_keys[0]}"}
        if args.envelopes:
            bodies = [
                {
                    "type": "live.started",
                    "subjects": [f"user:{u}" for u in users[i : i + SUBJECTS_PER_EVENT]],
                    "payload": live,
                    "actor": "host",
                }
                for i in range(0, n, SUBJECTS_PER_EVENT)
            ]
        else:
            async with aiohttp.ClientSession(headers=headers) as http:
                for i in range(0, n, 450):
                    async with http.patch(
                        f"{url}/v1/audiences/followers-host/members",
                        json={"add": users[i : i + 450]},
                    ) as r:
                        assert r.status == 200, await r.text()
            bodies = [
                {
                    "type": "live.started",
                    "payload": live,
                    "actor": "host",
                    "audience": "followers-host",
                }
            ]
        log(f"publishing {len(bodies)} event(s)")
        async with aiohttp.ClientSession(headers=headers) as http:

            async def post(body: dict[str, Any]) -> None:
                async with http.post(f"{url}/v1/events", json=body) as r:
                    assert r.status == 202, await r.text()

            load_before = round(os.getloadavg()[0], 2)
            t0 = time.time()
            await asyncio.gather(*(post(b) for b in bodies))
            t_published = time.time()
            stats: dict[str, Any] = {}
            in_app = 0
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                async with http.get(f"http://127.0.0.1:{fcm_port}/_stats") as r:
                    stats = await r.json()
                in_app = await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE channel = 'in_app'"
                    " AND state = 'delivered'"
                )
                push_open = await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE channel = 'push' AND state = 'queued'"
                )
                push_rows = await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE channel = 'push'"
                )
                if in_app >= n and push_rows >= n and push_open == 0:
                    break
                await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            "SELECT min(sent_at) AS first, max(sent_at) AS last FROM deliveries"
            " WHERE channel = 'in_app' AND state = 'delivered'"
        )
        push_states = dict(
            await conn.fetch(
                "SELECT state, count(*) FROM deliveries WHERE channel = 'push' GROUP BY state"
            )
        )
        per_user = await conn.fetchval(
            "SELECT count(*) FROM (SELECT user_id FROM notifications"
            " GROUP BY user_id HAVING count(*) <> 1) x"
        )
        inboxed = await conn.fetchval("SELECT count(DISTINCT user_id) FROM notifications")
        gone_left = await conn.fetchval(
            "SELECT count(*) FROM push_devices WHERE token LIKE 'gone-%'"
        )
        await conn.close()
        checks: dict[str, Any] = {
            "inbox_users": inboxed,
            "inbox_lost": n - inboxed,
            "inbox_users_not_exactly_once": per_user,
            "gone_tokens": len(gone),
            "gone_devices_left": gone_left,
        }
        counts = stats.get("tokens") or stats.get("per_token")
        if isinstance(counts, dict):
            live_tokens = [t for u, t in tokens.items() if u not in gone]
            checks["push_lost"] = sum(1 for t in live_tokens if not counts.get(t))
            checks["push_duplicated"] = sum(1 for t in live_tokens if int(counts.get(t) or 0) > 1)
        else:
            checks["push_lost"] = checks["push_duplicated"] = "fake reports no per-token counts"
        checks["ok"] = (
            checks["inbox_lost"] == 0
            and per_user == 0
            and gone_left == 0
            and checks["push_lost"] in (0, "fake reports no per-token counts")
            and checks["push_duplicated"] in (0, "fake reports no per-token counts")
        )
        in_app_last = row["last"].timestamp() - t0 if row["last"] else None
        push_last = stats["last"] - t0 if stats.get("last") else None
        last = max(x for x in (in_app_last, push_last) if x is not None)
        lat = sorted(a - t0 for a in arrivals)
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpu, Python "
            f"{platform.python_version()}",
            "bus": "redis streams" if args.redis else "in-process",
            "mode": "envelopes of 100" if args.envelopes else "one event to an audience",
            "load_avg_1m_before": load_before,
            "followers": n,
            "events": len(bodies),
            "publish_s": round(t_published - t0, 3),
            "in_app_delivered": in_app,
            "in_app_first_s": round(row["first"].timestamp() - t0, 3) if row["first"] else None,
            "in_app_last_s": round(in_app_last, 3) if in_app_last is not None else None,
            "push_accepted": stats.get("accepted"),
            "push_requests": stats.get("requests"),
            "push_states": push_states,
            "push_first_s": round(stats["first"] - t0, 3) if stats.get("first") else None,
            "push_last_s": round(push_last, 3) if push_last is not None else None,
            "push_longest_gap_s": stats.get("longest_gap_s"),
            "push_longest_gap_at_s": round(stats["longest_gap_after"] - t0, 3)
            if stats.get("longest_gap_after")
            else None,
            "last_delivery_s": round(last, 3),
            "deliveries_per_s": round((in_app + (stats.get("accepted") or 0)) / last, 1),
            "sockets": len(clients),
            "socket_received": len(lat),
            "socket_p50_s": round(statistics.median(lat), 3) if lat else None,
            "socket_max_s": round(lat[-1], 3) if lat else None,
            "checks": checks,
        }
        log(json.dumps(result))
        return result
    finally:
        for c in clients:
            await c.disconnect()
        if server is not None:
            stop(server)
        stop(fake)
        admin = await asyncpg.connect(PG)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Benchmark: notification fan-out (bench/notify)",
        "",
        "One `live.started` (immediate priority) from one host to N followers, routed to the",
        "in-app inbox (+ `notification:new` on /notifications) and to push (firebase-admin,",
        "FCM HTTP v1) at the fake FCM running in its own process. Every follower has one push",
        "device (~1% of them `gone-` tokens the fake calls UNREGISTERED) and quiet hours off;",
        "email, SMS and Telegram are skipped (no address, no phone, not configured): old code",
        "writes 5 delivery-log rows per follower, new code 2 plus one compact skip record.",
        "",
        "Mode `one event to an audience`: the followers are registered as an audience (not",
        "measured) and one event names it. Mode `envelopes of 100` (the old way): N/100",
        "envelopes of 100 `user:` subjects each, all at once. Times are from the first",
        "publish; the last in-app time is when its delivery row was marked delivered (after the",
        "socket emit), the last push time is its arrival at the fake.",
        "",
        "Reproduce: `bench/notify/run --followers 10000 --sockets 200` (add `--redis` for the",
        "Redis Streams bus). Needs the machine's PostgreSQL (and Redis for `--redis`).",
        "",
        "| when (UTC) | load | bus | mode | followers | events | time to last in-app |"
        " time to last push | time to last delivery | deliveries/s |"
        " sample sockets: received, p50, max | checks ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['when'][:16]} | {r.get('load_avg_1m_before')} | {r['bus']} |"
            f" {r.get('mode', 'envelopes of 100')} | {r['followers']} |"
            f" {r['events']} | {r['in_app_last_s']} s |"
            f" {r['push_last_s']} s | {r['last_delivery_s']} s | {r['deliveries_per_s']} |"
            f" {r['socket_received']}/{r['sockets']}, {r['socket_p50_s']} s,"
            f" {r['socket_max_s']} s | {r.get('checks', {}).get('ok', '-')} |"
        )
    lines += [
        "",
        f"Machine: {results[0]['machine']}. The machine was shared: other suites ran at the same"
        " time (the 1-minute load average before each run is in the raw results), which is why"
        " runs of the same code differ; take the figures as an order of magnitude.",
        "",
    ]
    lines += [
        "Where the time went on 2026-11-23, before issue 21's batching (cProfile and timers",
        "in-process on the same machine; the figures after it: docs/benchmarks.md, Heavy paths,",
        "before and after):",
        "",
        "- routing one 100-recipient event takes ~28 ms with the in-process bus: one transaction",
        "  (claim, prefs, 100 inbox rows, 500 delivery-log rows ~8.5 ms, 100 digest jobs), then",
        "  one statement that marks the in-app rows delivered and reads the unread counts, then",
        "  100 emits. With Redis the emits cost ~0.3 ms each through the Redis client manager",
        "  and dominate (~42 ms of ~69 ms per event). The bus consumer handles one event at a",
        "  time, so N/100 events are routed one after another.",
        "- a push costs ~2 ms of this process: the leasing and outcome writes are batched per",
        "  pass (3 lookups per pass, one UPDATE per group of finished sends), the rest is",
        "  firebase-admin's sync `messaging.send` (requests) in 16 worker threads, which compete",
        "  with the event loop for the GIL. firebase-admin's `send_each_async` (httpx) measured",
        "  ~3x slower here, and 64 threads were no faster than 16.",
        "- in-app and push share one process and one core's worth of GIL; PostgreSQL, the fake",
        "  FCM and the 200 sample clients share the other core.",
        "",
    ]
    lines += ["Raw results:", "", "```json", json.dumps(results, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--followers", type=int, default=10_000)
    p.add_argument("--sockets", type=int, default=200)
    p.add_argument("--redis", action="store_true", help="Redis Streams bus (else in-process)")
    p.add_argument("--both", action="store_true", help="run in-process, then Redis")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument(
        "--envelopes", action="store_true", help="the old way: N/100 events of 100 subjects"
    )
    p.add_argument("--gone-every", type=int, default=100, help="every Kth device is `gone-`")
    p.add_argument("--throttle-every", type=int, default=50, help="the fake's 429 every Kth")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = p.parse_args()
    results = []
    for redis in [False, True] if args.both else [args.redis]:
        args.redis = redis
        results.append(asyncio.run(run(args)))
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results_dir / f"notify-{stamp}.json").write_text(json.dumps(results, indent=1))
    if args.out:  # every run kept in results/, newest last
        runs = [
            r for f in sorted(results_dir.glob("notify-*.json")) for r in json.loads(f.read_text())
        ]
        args.out.write_text(markdown(runs))
        log(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
