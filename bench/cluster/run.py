"""bench/cluster runner: 1, 2 and 4 `ours serve` processes on this machine behind one load
generator, on a single Redis or (`--cluster`) the local Redis Cluster.

For each layout and node count: a fresh PostgreSQL database (on --database-url's server) and a
fresh Redis key prefix shared by the N nodes, each node with its own data dir; the Node load
generator (loadgen.js: light `ws` clients speaking the Socket.IO wire format by hand) spreads
--clients over the nodes and --rooms over the clients, and POSTs --rate events/s for
--duration s, event k to room k % R through node k % N. Layouts (--layouts):

- `spread`: client i on node i % N, in room floor(i / N) % R — every room has sockets on every
  node, so every node needs every event whatever the channel layout;
- `local`: client i in room i % R, on node (i % R) % N — each room's sockets all on one node:
  with per-room channels a node's inbound pub/sub traffic is its own rooms' (flat per node as
  nodes are added, 1/N of the total), with one shared channel it is the total on every node.

Reported per scenario: deliveries/s, latency p50/p99/max (receive time - scheduled publish
time, one clock), losses, and per node the inbound bytes from Redis between the start of
publishing and the end of the drain, measured two ways so that the old shared-channel code and
the per-room channels compare on equal terms:

- the node's own counter, `ours_pubsub_received_bytes_total` on /metrics (summed over its
  labels; null where the server has no such counter);
- the kernel, code-independently: `ss -tinp` `bytes_received` of the node process's TCP
  connections to the Redis ports, split into its pub/sub connections (those Redis's CLIENT
  LIST shows with sub/psub/ssub > 0, matched by address) and all of them. A connection opened
  during the window counts from zero; one closed during it is missed.

Results: one JSON line per scenario appended to bench/cluster/results/cluster-<UTC stamp>.jsonl
(with the machine, the load average before and after, the background busy cores), and a
summary table on stdout. Standard library only; invoked through the `run` wrapper.

    bench/cluster/run --nodes 1,2,4 --layouts spread,local --clients 400 --rooms 40 --rate 200
    bench/cluster/run --cluster ...        # the local cluster: scripts/redis-cluster start
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import Sampler, Server, fmt, log, row  # noqa: E402

common.set_log_name("cluster")

BENCH_ENV = {
    "OURS_RATE_CONNECT_PER_MIN": "1000000",
    "OURS_RATE_IP_PER_MIN": "1000000",
    "OURS_RATE_USER_PER_MIN": "1000000",
    "OURS_RATE_API_KEY_PER_MIN": "10000000",
    "OURS_LOG_LEVEL": "WARNING",
}
HIDDEN = common.HIDDEN_ARGS
CLUSTER_SEED = "redis://127.0.0.1:7101/0"
METRIC = "ours_pubsub_received_bytes_total"
PY_PACKAGES = ("python-socketio", "aiohttp", "redis", "uvloop")


class Node(Server):
    """One `ours serve` of the cluster under test: its own data dir, the run's shared Redis
    prefix, database and credentials."""

    def __init__(self, args, logdir: Path, shared: dict[str, str]) -> None:
        super().__init__("ours", args, logdir, "cluster", BENCH_ENV)
        self.shared = shared

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.shared, **common.env_pairs(self.args.ours_env)}


# ------------------------------------------------------------------ redis and postgres
def redis_cli(port: int, *args: str) -> str:
    return common.sh(["redis-cli", "-p", str(port), *args])


def redis_ports(args) -> tuple[list[int], list[int]]:
    """(every Redis port the nodes may talk to, the primaries') of the single Redis or the
    cluster."""
    seed = urlparse(args.redis_url).port or 6379
    if not args.cluster:
        return [seed], [seed]
    ports, primaries = [], []
    for line in redis_cli(seed, "cluster", "nodes").splitlines():
        parts = line.split()
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        ports.append(port)
        if "master" in parts[2]:
            primaries.append(port)
    return sorted(ports), sorted(primaries)


def subscribers(ports: list[int]) -> set[str]:
    """Client addresses (ip:port, the node's side) of the connections subscribed to any
    channel, from each Redis's CLIENT LIST."""
    out = set()
    for port in ports:
        for line in redis_cli(port, "client", "list").splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if sum(int(f.get(k, 0) or 0) for k in ("sub", "psub", "ssub")) > 0:
                out.add(f["addr"])
    return out


ADDR = re.compile(r"^\S+:\d+$")


def kernel_bytes(pids: list[int], ports: list[int]) -> dict[int, dict[str, int]]:
    """Per node pid: bytes received on its TCP connections to the Redis `ports` (`redis`) and
    on those of them subscribed to a channel (`pubsub`), from `ss -tinp`."""
    subs = subscribers(ports)
    text = common.sh(["ss", "-tinpH", "state", "established"])
    totals = {pid: {"redis": 0, "pubsub": 0} for pid in pids}
    lines = text.splitlines()
    for head, info in itertools.pairwise(lines):
        if head[:1].isspace() or not info[:1].isspace():
            continue
        addrs = [t for t in head.split() if ADDR.match(t)]
        pid = re.search(r"pid=(\d+)", head)
        got = re.search(r"bytes_received:(\d+)", info)
        if len(addrs) < 2 or not pid or int(pid.group(1)) not in totals:
            continue
        local, peer = addrs[0], addrs[1]
        if int(peer.rsplit(":", 1)[1]) not in ports:
            continue
        n = int(got.group(1)) if got else 0
        totals[int(pid.group(1))]["redis"] += n
        if local in subs:
            totals[int(pid.group(1))]["pubsub"] += n
    return totals


def metric_bytes(url: str) -> int | None:
    """The node's `ours_pubsub_received_bytes_total`, summed over its labels (None: none)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(METRIC) and not line.startswith("#")
    ]
    return int(sum(values)) if values else None


def psql(python: str, dsn: str, sql: str) -> None:
    """Run one statement on `dsn` with the venv's asyncpg (CREATE/DROP DATABASE)."""
    script = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1])\n"
        "    try: await c.execute(sys.argv[2])\n"
        "    finally: await c.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([python, "-c", script, dsn, sql], check=True, timeout=60)


def database_url(admin: str, name: str) -> str:
    base, _, query = admin.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


# ------------------------------------------------------------------ one scenario
def scenario(args, layout: str, n: int, logdir: Path) -> dict:
    tag = f"{layout} x{n}"
    prefix = "benchcl" + secrets.token_hex(4)
    db = "ours_bench_cluster_" + secrets.token_hex(4)
    psql(args.python, args.database_url, f'CREATE DATABASE "{db}"')
    shared = {
        "OURS_REDIS_URL": args.redis_url,
        "OURS_REDIS_PREFIX": prefix,
        "OURS_DATABASE_URL": database_url(args.database_url, db),
        "OURS_MASTER_KEY": args.master_key,
        **({"OURS_REDIS_CLUSTER": "true"} if args.cluster else {}),
    }
    ports, primaries = redis_ports(args)
    nodes: list[Node] = []
    entry: dict = {"scenario": {"layout": layout, "nodes": n, "redis": args.backend}}
    try:
        for _ in range(n):
            node = Node(args, logdir, shared)
            nodes.append(node)
            node.start()
        log(f"{tag} | {n} node(s) healthy: {' '.join(x.url for x in nodes)}")
        entry["background_busy_cores"] = common.wait_for_quiet(args, tag)
        entry["loadavg_before"] = common.loadavg()
        pids = [x.proc.pid for x in nodes if x.proc is not None]
        marks: dict[str, dict] = {}

        def on_phase(phase: str) -> None:
            if phase in ("publish_start", "drain_end"):
                marks[phase] = {
                    "kernel": kernel_bytes(pids, ports),
                    "metric": [metric_bytes(x.url) for x in nodes],
                }

        sampler = NodesSampler(pids)
        sampler.sample()
        sampler.start()
        argv = [
            "--urls", ",".join(x.url for x in nodes), "--layout", layout,
            "--clients", str(args.clients), "--rooms", str(args.rooms),
            "--workers", str(args.workers), "--rate", str(args.rate),
            "--duration", str(args.duration), "--payload-bytes", str(args.payload_bytes),
        ]  # fmt: skip
        try:
            result, phase_marks = common.run_loadgen(
                HERE / "loadgen.js",
                argv,
                env={"BENCH_API_KEY": args.api_key, "BENCH_JWT_SECRET": args.jwt_secret},
                timeout=120 + args.duration + 60,
                tag=tag,
                server=sampler,
                on_phase=on_phase,
            )
        finally:
            sampler.halt()
        entry["result"] = result
        entry["loadavg_after"] = common.loadavg()
        if "publish_start" in phase_marks and "drain_end" in phase_marks:
            entry["busy_cores"] = common.cores_between(
                phase_marks["publish_start"], phase_marks["drain_end"]
            )
        entry["per_node"] = per_node(marks, pids, result, n)
    except Exception as e:  # the scenario's failure is its result; the next one runs
        log(f"{tag} | FAILED: {e}")
        entry["error"] = str(e)
        entry["server_log_tail"] = [x.log_tail() for x in nodes]
    finally:
        for x in nodes:
            x.stop()
        for port in primaries:  # each node of a cluster owns (and scans) its own keys
            common.drop_redis_keys(args.python, f"redis://127.0.0.1:{port}/0", prefix)
        psql(args.python, args.database_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return entry


def per_node(marks: dict, pids: list[int], result: dict, n: int) -> list[dict]:
    a, b = marks.get("publish_start"), marks.get("drain_end")
    out = []
    for i, pid in enumerate(pids):
        delivered = (result.get("deliveries_per_node") or {}).get(str(i))
        row_: dict = {"node": i, "deliveries": delivered}
        if a and b:
            ka, kb = a["kernel"][pid], b["kernel"][pid]
            row_["kernel_pubsub_bytes"] = kb["pubsub"] - ka["pubsub"]
            row_["kernel_redis_bytes"] = kb["redis"] - ka["redis"]
            ma, mb = a["metric"][i], b["metric"][i]
            row_["metric_pubsub_bytes"] = mb - ma if ma is not None and mb is not None else None
        out.append(row_)
    return out


class NodesSampler(Sampler):
    """CPU and RSS of several process trees (the N nodes) together."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(pids[0], None)
        self.roots = pids

    def sample(self) -> tuple[float, int]:
        for root in self.roots[1:]:
            more = common.tree(root)
            with self.lock:
                self.pids |= more
        return super().sample()


# ------------------------------------------------------------------ report
COLS = (
    "layout", "nodes", "delivered/expected", "deliveries/s", "p50 ms", "p99 ms",
    "pub/sub in per node, kernel KiB", "per node, metric KiB", "busy cores (nodes/loadgen/other)",
)  # fmt: skip


def summary_row(e: dict) -> str:
    s = e["scenario"]
    if "error" in e:
        return common.error_row(COLS, [s["layout"], str(s["nodes"])], e["error"])
    r, lat = e["result"], e["result"]["latency_ms"]
    kib = lambda v: "n/a" if v is None else f"{v / 1024:,.0f}"  # noqa: E731
    kernel = " / ".join(kib(p.get("kernel_pubsub_bytes")) for p in e["per_node"])
    metric = " / ".join(kib(p.get("metric_pubsub_bytes")) for p in e["per_node"])
    c = e.get("busy_cores") or {}
    return row(
        s["layout"], s["nodes"], f"{fmt(r['delivered'])}/{fmt(r['expected'])}",
        fmt(r["deliveries_per_s"]), lat["p50"], lat["p99"], kernel, metric,
        f"{c.get('server', 'n/a')} / {c.get('loadgen', 'n/a')} / {c.get('other', 'n/a')}",
    )  # fmt: skip


def main() -> int:
    ap = common.parser(__doc__ or "")
    ap.add_argument("--nodes", default="1,2,4", help="node counts, comma list")
    ap.add_argument("--layouts", default="spread,local", help="spread and/or local")
    ap.add_argument("--clients", type=int, default=400)
    ap.add_argument("--rooms", type=int, default=40)
    ap.add_argument("--rate", type=float, default=200, help="events/s over all rooms")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--payload-bytes", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="load generator worker processes")
    ap.add_argument("--cluster", action="store_true", help=f"the local cluster ({CLUSTER_SEED})")
    ap.add_argument("--redis-url", default=None, help="default: 127.0.0.1:6379, or the seed")
    ap.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL admin DSN: each scenario gets a fresh database there",
    )  # fmt: skip
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--python", default=common.venv_python())
    common.add_ours_args(ap, BENCH_ENV)
    common.add_quiet_args(ap)
    args = ap.parse_args()
    args.redis_url = args.redis_url or (
        CLUSTER_SEED if args.cluster else "redis://127.0.0.1:6379/0"
    )
    args.backend = "cluster" if args.cluster else "redis"
    args.master_key = secrets.token_hex(32)
    common.new_credentials(args)
    common.ensure_npm(HERE, ("ws",))
    common.install_cleanup()
    started, outdir, logdir = common.begin_run("cluster", args.out)
    machine = common.machine_info(args.python, PY_PACKAGES)
    path = outdir / f"cluster-{common.utc_stamp(started)}.jsonl"
    head = {
        "benchmark": "bench/cluster",
        "started_at": started.isoformat(timespec="seconds"),
        "command": common.command_line("cluster"),
        "args": {k: v for k, v in vars(args).items() if k not in (*HIDDEN, "master_key")},
        "machine": machine,
    }
    entries = []
    for layout in common.comma_list(args.layouts):
        for n in (int(x) for x in common.comma_list(args.nodes)):
            entry = {**head, **scenario(args, layout, n, logdir)}
            entry["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            with path.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
            entries.append(entry)
            time.sleep(1)
    print()
    print("\n".join([*common.table_head(COLS, left=1), *map(summary_row, entries)]))
    log(f"wrote {common.repo_relative(path)} (server logs in {logdir})")
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
