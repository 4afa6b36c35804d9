"""bench/fanout runner: room fan-out, ours vs bare python-socketio vs node socket.io.

Starts each server in turn on a free 127.0.0.1 port (fresh for every scenario;
"ours" with a fresh temporary OURS_DATA_DIR), runs the Node load generator
(loadgen.js) against it, stops it, and writes a JSON + markdown report.
Standard library only; invoked through the `run` wrapper next to this file.

    bench/fanout/run --clients 1000 --rates 10,50 --duration 10 --servers ours,bare,node --saturate
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import (  # noqa: E402
    Sampler,
    drop_redis_keys,
    ensure_npm,
    fmt,
    free_port,
    http_ok,
    install_cleanup,
    kill_group,
    log,
    log_tail,
    machine_busy,
    npm_version,
    release_datadir,
    row,
    spawn,
    stop,
    venv_python,
    wait_for_quiet,
    wait_healthy,
)

common.set_log_name("fanout")

KNOWN_SERVERS = ("ours", "ours-redis", "bare", "bare-nodeflate", "node")
OURS_KINDS = ("ours", "ours-redis")

OURS_BENCH_ENV = {
    "OURS_RATE_CONNECT_PER_MIN": "1000000",
    "OURS_RATE_IP_PER_MIN": "1000000",
    "OURS_RATE_USER_PER_MIN": "1000000",
    "OURS_RATE_API_KEY_PER_MIN": "10000000",
}


PY_PACKAGES = (
    "python-socketio",
    "python-engineio",
    "aiohttp",
    "uvloop",
    "orjson",
    "simple-websocket",
)
NPM_PACKAGES = ("socket.io", "socket.io-client", "engine.io", "engine.io-client", "ws")


# ------------------------------------------------------------------ helpers
def machine_info(py: str, ours_bin: str | None) -> dict:
    npm = {n: npm_version(HERE, n) for n in NPM_PACKAGES}
    return common.machine_info(py, PY_PACKAGES, extra={"npm_packages": npm, "ours_bin": ours_bin})


# ------------------------------------------------------------------ servers
class Server:
    def __init__(self, kind: str, args, logdir: Path):
        self.kind, self.args = kind, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.datadir: str | None = None
        self.redis_prefix: str | None = None
        self.logfile = logdir / f"{kind}-{self.port}.log"
        self.env = dict(os.environ)

    def command(self) -> list[str]:
        host = ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.kind in OURS_KINDS:
            return [self.args.ours_bin, "serve", *host]
        if self.kind == "bare":
            return [self.args.python, str(HERE / "bare_server.py"), *host]
        if self.kind == "bare-nodeflate":
            return [self.args.python, str(HERE / "bare_server.py"), *host, "--no-ws-compress"]
        if self.kind == "node":
            return ["node", str(HERE / "node_server.js"), *host]
        raise ValueError(self.kind)

    def start(self) -> None:
        if self.kind in OURS_KINDS:
            self.datadir = tempfile.mkdtemp(prefix="ours-bench-fanout-")
            self.env.update(
                OURS_DATA_DIR=self.datadir,
                OURS_JWT_SECRET=self.args.jwt_secret,
                OURS_API_KEYS=self.args.api_key,
            )
            # every client connects from 127.0.0.1: lift the per-IP / per-key rate limits,
            # this measures fan-out, not the limiter (overridable with --ours-env)
            self.env.update(OURS_BENCH_ENV)
            if self.kind == "ours-redis":  # Redis bus, room log and pub/sub; a fresh key prefix
                self.redis_prefix = "bench" + secrets.token_hex(4)
                self.env.update(
                    OURS_REDIS_URL=self.args.redis_url, OURS_REDIS_PREFIX=self.redis_prefix
                )
            self.env.update(dict(kv.split("=", 1) for kv in self.args.ours_env))
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        fh = open(self.logfile, "ab")
        self.proc = spawn(
            self.command(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            # ours: run inside its temporary data dir, so that neither a developer's .env nor
            # anything the server writes next to its working directory is involved
            cwd=self.datadir or HERE,
        )
        fh.close()
        timeout = self.args.ours_startup_timeout if self.kind in OURS_KINDS else 30
        wait_healthy(self.proc, self.url, timeout, self.kind)

    def alive(self) -> bool:
        return (
            self.proc is not None and self.proc.poll() is None and http_ok(self.url + "/health", 5)
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        if self.datadir:
            release_datadir(self.datadir, label=f"{self.kind}: ")
            self.datadir = None
        if self.redis_prefix:
            drop_redis_keys(self.args.python, self.args.redis_url, self.redis_prefix)
            self.redis_prefix = None

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.logfile, n)


def preflight_ours(args) -> str | None:
    """Check `ours token` works (informational). Returns a problem or None."""
    tmp = tempfile.mkdtemp(prefix="ours-bench-fanout-token-")
    env = dict(
        os.environ, OURS_JWT_SECRET=args.jwt_secret, OURS_DATA_DIR=tmp, OURS_API_KEYS=args.api_key
    )
    try:
        r = subprocess.run(
            [args.ours_bin, "token", "--user", "42"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp,  # nothing it may write lands in the work tree
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ours token --user 42` failed: {e}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tok = r.stdout.strip()
    if r.returncode != 0 or tok.count(".") != 2:
        err = r.stderr.strip()[-300:]
        return f"`ours token --user 42` rc={r.returncode} out={tok[:120]!r} err={err!r}"
    return None


# ------------------------------------------------------------------ scenarios
def scenarios(args) -> list[dict]:
    out = [{"name": f"rate {r:g}/s", "mode": "rate", "rate": r} for r in args.rates]
    if args.saturate:
        if args.sat_rate > 0:
            name = f"saturate {args.sat_rate:g}/s"
        else:
            name = f"saturate closed-loop K={args.sat_concurrency}"
        out.append({"name": name, "mode": "saturate", "rate": args.sat_rate})
    return out


def run_loadgen(server: Server, sc: dict, args, sampler: Sampler) -> dict:
    cmd = [
        "node",
        str(HERE / "loadgen.js"),
        "--url", server.url,
        "--clients", str(args.clients),
        "--workers", str(args.workers),
        "--mode", sc["mode"],
        "--rate", str(sc["rate"]),
        "--concurrency", str(args.sat_concurrency),
        "--max-inflight", str(args.max_inflight),
        "--duration", str(args.duration),
        "--payload-bytes", str(args.payload_bytes),
        "--drain-max", str(args.drain_max),
        "--label", server.kind,
        "--client-deflate", args.client_deflate,
    ]  # fmt: skip
    env = dict(os.environ, BENCH_API_KEY=args.api_key, BENCH_JWT_SECRET=args.jwt_secret)
    # connect (<=60 s) + warmup + publish + unanswered POSTs (<= drain-max) + drain (<= drain-max)
    hard_timeout = 60 + 10 + args.duration + 2 * args.drain_max + 60
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
    lg_sampler = Sampler(p.pid, None)
    killer = threading.Timer(hard_timeout, lambda: kill_group(p, 2))
    killer.start()
    result, error, marks = None, None, {}
    stderr_lines: list[str] = []
    assert p.stdout is not None and p.stderr is not None
    err_pipe, out_pipe = p.stderr, p.stdout
    t_err = threading.Thread(target=lambda: stderr_lines.extend(err_pipe), daemon=True)
    t_err.start()
    try:
        for line in out_pipe:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                log(f"  loadgen: {line.rstrip()}")
                continue
            kind = ev.get("event")
            if kind == "progress":
                log(f"  {server.kind} | {sc['name']} | {ev['msg']}")
            elif kind == "phase":
                cpu, rss = sampler.sample()
                marks[ev["phase"]] = (time.time(), cpu, rss, lg_sampler.sample()[0], machine_busy())
            elif kind == "result":
                result = ev
            elif kind == "error":
                error = ev.get("error")
        p.wait(timeout=30)
    finally:
        killer.cancel()
        stop(p, grace=2)
    t_err.join(timeout=2)
    if result is None:
        tail = "".join(stderr_lines)[-800:]
        raise RuntimeError(f"loadgen failed: {error or 'no result'} (rc={p.returncode}) {tail}")
    if "publish_start" in marks and "drain_end" in marks:
        (t0, c0, _, l0, m0), (t1, c1, rss1, l1, m1) = marks["publish_start"], marks["drain_end"]
        wall = max(t1 - t0, 1e-6)
        result["server_cpu_s"] = round(c1 - c0, 2)
        result["server_cpu_pct"] = round(100 * (c1 - c0) / wall, 1)
        if "publish_end" in marks:
            t2, c2 = marks["publish_end"][:2]
            result["server_cpu_pct_publish"] = round(100 * (c2 - c0) / max(t2 - t0, 1e-6), 1)
        result["server_rss_mib_end"] = round(rss1 / 2**20, 1)
        # busy cores over [publish start, drain end]: this server, the load generator, and
        # everything else on the machine (other work running at the same time skews results)
        result["busy_cores"] = {
            "machine": round((m1 - m0) / wall, 2),
            "server": round((c1 - c0) / wall, 2),
            "loadgen": round((l1 - l0) / wall, 2),
            "other": round(max(0.0, (m1 - m0) - (c1 - c0) - (l1 - l0)) / wall, 2),
        }
    result["server_rss_mib_peak"] = round(sampler.peak_rss / 2**20, 1)
    result["scenario"] = sc["name"]
    result.pop("event", None)
    return result


# ------------------------------------------------------------------ report
def spread(r: dict, key: str, nd: int) -> str:
    vals = r.get(key) or []
    if len(vals) < 2:
        return ""
    return f" ({fmt(float(min(vals)), nd)}-{fmt(float(max(vals)), nd)})"


def cores(r: dict) -> str:
    c = r.get("busy_cores")
    if not c:
        return "n/a"
    before = r.get("background_busy_cores_before")
    tail = f" ({before:.2f})" if before is not None else ""
    return f"{c['server']:.2f} / {c['loadgen']:.2f} / {c['other']:.2f}{tail}"


def msgs_per_s(r: dict) -> int:
    """Headline delivered msgs/s: over the publish window when saturated."""
    return r["window_delivered_per_s"] if r["mode"] != "rate" else r["delivered_per_s"]


MAIN_COLS = (
    "server",
    "scenario",
    "clients",
    "events (accepted/s)",
    "publish s",
    "expected",
    "delivered",
    "lost",
    "msgs/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "drain s",
    "kept up",
    "CPU cores: server / loadgen / other (other before)",
)
SAT_COLS = (
    "server",
    "scenario",
    "accepted ev/s",
    "offered msgs/s",
    "delivered msgs/s (window)",
    "delivered msgs/s (to last)",
    "lost",
    "p50 ms",
    "p99 ms",
    "drain s",
    "fell behind",
    "server CPU (publish)",
    "server RSS peak MiB",
)


def render_md(report: dict) -> str:
    m = report["machine"]
    a = report["args"]
    pkgs = {**m["python_packages"], **m["npm_packages"]}
    pkgs_s = ", ".join(f"{k} {v}" for k, v in pkgs.items() if k != "python")
    dirty = " (server/ dirty)" if m["git_dirty"] else ""
    lines = [
        f"# Fan-out benchmark, {report['started_at']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['nproc']} vCPU {m['cpu_model']}, {m['mem_total_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}; Node {m['node']}, Python {pkgs.get('python')}; {pkgs_s}; "
        f"git {m['git_commit']}{dirty}.",
        "",
        f"Load: {a['clients']} socket.io-client connections (websocket only) in {a['workers']} "
        f"worker processes, one room; clients offer permessage-deflate: {a['client_deflate']}; "
        f"payload {a['payload_bytes']} B; {a['duration']:g} s per scenario; latency = client "
        "receive time - publish time (same clock, carried in the title); lost = not received "
        f"{a['drain_max']:g} s after the last POST was answered; CPU cores = busy cores over "
        "the publish + drain window (other = everything else running on the machine).",
        *(
            [
                "",
                f"Each row is the median of {a['repeat']} runs by msgs/s (servers run each "
                "scenario back to back); brackets give the min-max over the runs.",
            ]
            if a.get("repeat", 1) > 1
            else []
        ),
        "",
        row(*MAIN_COLS),
        row(*(["---"] * 2 + ["---:"] * (len(MAIN_COLS) - 2))),
    ]
    for r in report["summary"]:
        if "error" in r:
            err = r["error"].replace("|", "/").replace("\n", " ")[:160]
            if err.startswith("pending"):
                err = "pending: run `bench/fanout/run`"
            lines.append(row(r["server"], r["scenario"], err, *([""] * (len(MAIN_COLS) - 3))))
            continue
        lat = r["latency_ms"]
        lines.append(
            row(
                r["server"],
                r["scenario"],
                fmt(r["clients_joined"]),
                f"{fmt(r['accepted'])} ({fmt(r['publish_rate'])}/s)",
                fmt(r["publish_window_s"], 2),
                fmt(r["expected"]),
                fmt(r["delivered"]),
                fmt(r["lost"]),
                fmt(msgs_per_s(r)) + spread(r, "msgs_per_s_all", 0),
                fmt(lat["p50"]),
                fmt(lat["p99"]) + spread(r, "p99_ms_all", 1),
                fmt(lat["max"]),
                fmt(r["drain_s"], 2),
                "yes" if r.get("kept_up") else "no",
                cores(r),
            )
        )
    sat = [r for r in report["summary"] if "error" not in r and r["mode"] != "rate"]
    if sat:
        lines += [
            "",
            "Saturated: publish rate actually accepted, what the clients received during the "
            "publish window, and how long deliveries went on after publishing ended.",
            "",
            row(*SAT_COLS),
            row(*(["---"] * 2 + ["---:"] * (len(SAT_COLS) - 2))),
        ]
        for r in sat:
            lat = r["latency_ms"]
            lines.append(
                row(
                    r["server"],
                    r["scenario"],
                    fmt(r["publish_rate"]),
                    fmt(r["offered_per_s"]),
                    fmt(r["window_delivered_per_s"]),
                    fmt(r["delivered_per_s"]),
                    fmt(r["lost"]),
                    fmt(lat["p50"]),
                    fmt(lat["p99"]),
                    fmt(r["drain_s"], 2),
                    "yes" if r["fell_behind"] else "no",
                    f"{fmt(r.get('server_cpu_pct_publish'))} %",
                    fmt(r.get("server_rss_mib_peak")),
                )
            )
    ratios = report.get("ratios") or []
    if ratios:
        lines += [
            "",
            "Ratios, ours / baseline (msgs/s above 1 and p99 below 1 favour ours):",
            "",
            row("server", "scenario", "baseline", "msgs/s ratio", "p99 ratio"),
            row("---", "---", "---", "---:", "---:"),
        ]
        for x in ratios:
            lines.append(
                row(
                    x.get("server", "ours"),
                    x["scenario"],
                    x["baseline"],
                    fmt(x["msgs_ratio"], 2),
                    fmt(x["p99_ratio"], 2),
                )
            )
    notes = report.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def summarize(results: list[dict], servers: list[str], scs: list[dict]) -> list[dict]:
    """One row per (server, scenario): the median run by delivered msgs/s, with the spread of
    all repeats; or the first error when no repeat succeeded."""
    out = []
    for kind in servers:
        for sc in scs:
            runs = [r for r in results if r["server"] == kind and r["scenario"] == sc["name"]]
            ok = sorted((r for r in runs if "error" not in r), key=msgs_per_s)
            if not ok:
                if runs:
                    out.append(runs[0])
                continue
            row = dict(ok[(len(ok) - 1) // 2])
            row["runs"] = len(ok)
            row["failed_runs"] = len(runs) - len(ok)
            row["msgs_per_s_all"] = [msgs_per_s(r) for r in ok]
            row["p99_ms_all"] = sorted(r["latency_ms"]["p99"] for r in ok)
            out.append(row)
    return out


def compute_ratios(results: list[dict]) -> list[dict]:
    by = {(r["server"], r["scenario"]): r for r in results if "error" not in r}
    out = []
    for (srv, scen), r in by.items():
        if srv not in OURS_KINDS:
            continue
        for base in ("bare", "node", "bare-nodeflate"):
            b = by.get((base, scen))
            if not b:
                continue

            out.append(
                {
                    "server": srv,
                    "scenario": scen,
                    "baseline": base,
                    "msgs_ratio": round(msgs_per_s(r) / msgs_per_s(b), 3)
                    if msgs_per_s(b)
                    else None,
                    "p99_ratio": round(r["latency_ms"]["p99"] / b["latency_ms"]["p99"], 3)
                    if r["latency_ms"]["p99"] and b["latency_ms"]["p99"]
                    else None,
                }
            )
    return out


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rates", default="10,50", help="comma list of fixed publish rates, events/s")
    ap.add_argument("--duration", type=float, default=10, help="publish seconds per scenario")
    ap.add_argument(
        "--servers", default="ours,bare,node", help=f"comma list of {','.join(KNOWN_SERVERS)}"
    )
    ap.add_argument("--saturate", action="store_true", help="add the saturated scenario")
    ap.add_argument(
        "--sat-rate",
        type=float,
        default=500,
        help="saturated publish rate, events/s (0 = closed loop)",
    )
    ap.add_argument(
        "--sat-concurrency", type=int, default=8, help="in-flight POSTs when --sat-rate 0"
    )
    ap.add_argument(
        "--max-inflight",
        type=int,
        default=64,
        help="publisher keep-alive sockets; saturated mode skips a due event when all are busy",
    )
    ap.add_argument(
        "--client-deflate",
        choices=("on", "off"),
        default="on",
        help="on: clients offer permessage-deflate, as browsers and socket.io-client do "
        "(servers that accept it compress every frame per client); off: they do not",
    )
    ap.add_argument("--workers", type=int, default=2, help="load generator client processes")
    ap.add_argument("--payload-bytes", type=int, default=200)
    ap.add_argument(
        "--drain-max", type=float, default=30, help="max seconds to wait for late deliveries"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything N times; the tables show the median run per server and scenario",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="max seconds to wait before each scenario for other work on the machine to stop",
    )
    ap.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="busy cores (outside the benchmark) under which the machine counts as quiet",
    )
    ap.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "ours"))
    ap.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `ours serve` (repeatable); defaults lift rate limits: "
        + " ".join(f"{k}={v}" for k, v in OURS_BENCH_ENV.items()),
    )
    ap.add_argument("--ours-startup-timeout", type=float, default=120)
    ap.add_argument(
        "--redis-url",
        default=os.environ.get("OURS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the ours-redis server (its keys get a fresh prefix per start)",
    )
    ap.add_argument("--python", default=venv_python(), help="python for the bare server")
    ap.add_argument(
        "--out", default=str(HERE / "results"), help="directory for the JSON + markdown"
    )
    args = ap.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.api_key = "bench-" + secrets.token_hex(8)
    args.jwt_secret = secrets.token_hex(32)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in KNOWN_SERVERS:
            ap.error(f"unknown server {s!r}")

    install_cleanup()

    ensure_npm(HERE, ("socket.io-client", "socket.io"))
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="bench-fanout-logs-"))
    ours_bin = args.ours_bin if os.access(args.ours_bin, os.X_OK) else None
    machine = machine_info(args.python, ours_bin)
    scs = scenarios(args)
    log(
        f"{len(servers)} server(s) x {len(scs)} scenario(s), {args.clients} clients, "
        f"{args.duration:g}s each; server logs in {logdir}"
    )
    results: list[dict] = []
    notes: list[str] = []

    runnable = list(servers)
    ours_kinds = [k for k in OURS_KINDS if k in servers]
    if ours_kinds:
        if not ours_bin:
            msg = f"{args.ours_bin} not found: ours pending, run `bench/fanout/run`"
            log(msg)
            notes.append(msg)
            for kind in ours_kinds:
                runnable.remove(kind)
                for sc in scs:
                    results.append(
                        {"server": kind, "scenario": sc["name"], "error": "pending (not installed)"}
                    )
        else:
            problem = preflight_ours(args)
            if problem:
                log(f"ours preflight: {problem}")
                notes.append(f"ours preflight: {problem}")

    # scenario-major order (every server runs a scenario back to back), repeated --repeat
    # times, so that whatever else the machine is doing hits all servers alike
    plan = [(rep, sc, kind) for rep in range(args.repeat) for sc in scs for kind in runnable]
    for n, (rep, sc, kind) in enumerate(plan, 1):
        tag = f"{kind} | {sc['name']}" + (
            f" | run {rep + 1}/{args.repeat}" if args.repeat > 1 else ""
        )
        log(f"[{n}/{len(plan)}] {tag}")
        srv = None
        try:
            srv = Server(kind, args, logdir)
            log(f"{tag} | starting server on {srv.url}")
            t = time.time()
            srv.start()
            log(f"{tag} | healthy after {time.time() - t:.1f}s")
            background = wait_for_quiet(args, f"{kind} | {sc['name']}")
            assert srv.proc is not None
            sampler = Sampler(srv.proc.pid, srv.datadir)
            sampler.sample()
            sampler.start()
            log(f"{tag} | start")
            try:
                r = run_loadgen(srv, sc, args, sampler)
            finally:
                sampler.halt()
            r["server"] = kind
            r["repeat"] = rep + 1
            r["background_busy_cores_before"] = background
            results.append(r)
            lat = r["latency_ms"]
            log(
                f"{tag} | delivered {r['delivered']:,}/{r['expected']:,} "
                f"lost {r['lost']:,} msgs/s {msgs_per_s(r):,} p50 {lat['p50']} p99 {lat['p99']} "
                f"max {lat['max']} ms, busy cores {r.get('busy_cores')}"
            )
        except Exception as e:
            log(f"{tag} | FAILED: {e}")
            entry = {"server": kind, "scenario": sc["name"], "repeat": rep + 1, "error": str(e)}
            if srv is not None:
                entry["server_log_tail"] = srv.log_tail()
                log(f"{kind} log tail:\n{entry['server_log_tail']}")
            results.append(entry)
        finally:
            if srv is not None:
                srv.stop()

    summary = summarize(results, servers, scs)
    report = {
        "benchmark": "bench/fanout",
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/fanout/run " + " ".join(sys.argv[1:]),
        "args": {
            k: v
            for k, v in vars(args).items()
            if k not in ("api_key", "jwt_secret", "python", "out")
        },
        "machine": machine,
        "ours_env": {**OURS_BENCH_ENV, **dict(kv.split("=", 1) for kv in args.ours_env)},
        "results": results,
        "summary": summary,
        "ratios": compute_ratios(summary),
        "notes": notes,
        "server_logs": str(logdir),
    }
    jpath = outdir / f"fanout-{stamp}.json"
    mpath = outdir / f"fanout-{stamp}.md"
    jpath.write_text(json.dumps(report, indent=2) + "\n")
    md = render_md(report)
    mpath.write_text(md)
    print()
    print(md)
    log(
        f"wrote {jpath.relative_to(REPO) if jpath.is_relative_to(REPO) else jpath} and {mpath.name}"
    )
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
