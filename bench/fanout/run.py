"""bench/fanout runner: room fan-out, ours vs bare python-socketio vs node socket.io.

Starts each server in turn on a free 127.0.0.1 port (fresh for every scenario;
"ours" with a fresh temporary OURS_DATA_DIR), runs the Node load generator
(loadgen.js) against it, stops it, and writes a JSON + markdown report.
Standard library only; invoked through the `run` wrapper next to this file.

    bench/fanout/run --clients 1000 --rates 10,50 --duration 10 --servers ours,bare,node --saturate
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import OURS_KINDS, Sampler, Server, fmt, log, row  # noqa: E402

common.set_log_name("fanout")

KNOWN_SERVERS = ("ours", "ours-redis", "bare", "bare-nodeflate", "node", "ws")


class FanoutServer(Server):
    """`Server`, plus "ws": the minimal raw-`ws` broadcast server (ws_server.js), the ceiling."""

    def command(self) -> list[str]:
        if self.kind == "ws":
            return [
                "node",
                str(HERE / "ws_server.js"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        return super().command()


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
    npm = {n: common.npm_version(HERE, n) for n in NPM_PACKAGES}
    return common.machine_info(py, PY_PACKAGES, extra={"npm_packages": npm, "ours_bin": ours_bin})


# ------------------------------------------------------------------ servers
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
    argv = [
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
        "--client", args.client,
    ]  # fmt: skip
    env = {"BENCH_API_KEY": args.api_key, "BENCH_JWT_SECRET": args.jwt_secret}
    # connect (<=60 s) + warmup + publish + unanswered POSTs (<= drain-max) + drain (<= drain-max)
    timeout = 60 + 10 + args.duration + 2 * args.drain_max + 60
    tag = f"{server.kind} | {sc['name']}"
    result, marks = common.run_loadgen(
        HERE / "loadgen.js", argv, env=env, timeout=timeout, tag=tag, server=sampler
    )
    if "publish_start" in marks and "drain_end" in marks:
        m0, m1 = marks["publish_start"], marks["drain_end"]
        wall = max(m1.t - m0.t, 1e-6)
        result["server_cpu_s"] = round(m1.server_cpu - m0.server_cpu, 2)
        result["server_cpu_pct"] = round(100 * (m1.server_cpu - m0.server_cpu) / wall, 1)
        if "publish_end" in marks:
            m2 = marks["publish_end"]
            result["server_cpu_pct_publish"] = round(
                100 * (m2.server_cpu - m0.server_cpu) / max(m2.t - m0.t, 1e-6), 1
            )
        result["server_rss_mib_end"] = round(m1.server_rss / 2**20, 1)
        # busy cores over [publish start, drain end]
        result["busy_cores"] = common.cores_between(m0, m1)
    result["server_rss_mib_peak"] = round(sampler.peak_rss / 2**20, 1)
    result["scenario"] = sc["name"]
    return result


def run_scenario(srv: Server, args, sc: dict, rep: int, tag: str) -> dict:
    """One scenario against a started server: wait for a quiet machine, run the load generator
    while sampling the server."""
    background = common.wait_for_quiet(args, f"{srv.kind} | {sc['name']}")
    assert srv.proc is not None
    sampler = Sampler(srv.proc.pid, srv.datadir)
    sampler.sample()
    sampler.start()
    log(f"{tag} | start")
    try:
        r = run_loadgen(srv, sc, args, sampler)
    finally:
        sampler.halt()
    r["server"] = srv.kind
    r["repeat"] = rep + 1
    r["background_busy_cores_before"] = background
    lat = r["latency_ms"]
    log(
        f"{tag} | delivered {r['delivered']:,}/{r['expected']:,} "
        f"lost {r['lost']:,} msgs/s {msgs_per_s(r):,} p50 {lat['p50']} p99 {lat['p99']} "
        f"max {lat['max']} ms, busy cores {r.get('busy_cores')}"
    )
    return r


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
    "refused (503)",
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
    lines = [
        *common.md_head("#", "Fan-out benchmark", report),
        common.machine_md(m, common.packages_md(pkgs)),
        "",
        f"Load: {a['clients']} "
        + (
            "light raw `ws` clients (Engine.IO/Socket.IO by hand)"
            if a.get("client") == "raw"
            else "socket.io-client connections"
        )
        + f" (websocket only) in {a['workers']} "
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
        *common.table_head(MAIN_COLS, left=2),
    ]
    for r in report["summary"]:
        if "error" in r:
            err = r["error"]
            if err.startswith("pending"):
                err = "pending: run `bench/fanout/run`"
            lines.append(common.error_row(MAIN_COLS, (r["server"], r["scenario"]), err, 160))
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
                fmt(refused(r)),
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
            *common.table_head(SAT_COLS, left=2),
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
    lines += ladder_md(report)
    ratios = report.get("ratios") or []
    if ratios:
        lines += [
            "",
            "Ratios, ours / baseline (msgs/s above 1 and p99 below 1 favour ours):",
            "",
            *common.table_head(("server", "scenario", "baseline", "msgs/s ratio", "p99 ratio"), 3),
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
    lines += common.notes_md(report.get("notes") or [])
    return "\n".join(lines) + "\n"


def refused(r: dict) -> int:
    """Publishes the server refused with 503 (admission control: fan-out past capacity)."""
    return int((r.get("post_status") or {}).get("503", 0))


def ladder_md(report: dict) -> list[str]:
    """The rate ladder: per rung and server delivered msgs/s, p50 / p99 and refused publishes;
    ours against the ceiling ("ws") and against its own peak rung."""
    rungs = [r for r in report["summary"] if "error" not in r and r["mode"] == "rate"]
    rates = sorted({r["rate_target"] for r in rungs})
    servers = [
        s for s in report["args"]["servers"].split(",") if any(r["server"] == s for r in rungs)
    ]
    if len(rates) < 2 or not servers:
        return []
    by = {(r["server"], r["rate_target"]): r for r in rungs}
    ours = [s for s in servers if s in OURS_KINDS]
    cols = ["events/s"]
    for s in servers:
        cols += [f"{s} msgs/s", f"{s} p50 / p99 ms", f"{s} refused"]
    for s in ours:
        if "ws" in servers:
            cols.append(f"{s} ÷ ws")
        cols.append(f"{s} ÷ its best so far")
    lines = [
        "",
        "Rate ladder (1 run per rung unless --repeat): delivered msgs/s, latency of the "
        "delivered messages, publishes refused with 503; ours against the minimal server "
        "(ws), and against its best rung up to this one (below 1 past saturation: it lost "
        "capacity instead of holding it).",
        "",
        *common.table_head(tuple(cols), left=1),
    ]
    for rate in rates:
        cells = [fmt(int(rate))]
        for s in servers:
            r = by.get((s, rate))
            if r is None:
                cells += ["—", "—", "—"]
                continue
            lat = r["latency_ms"]
            cells += [fmt(msgs_per_s(r)), f"{fmt(lat['p50'])} / {fmt(lat['p99'])}", fmt(refused(r))]
        for s in ours:
            r = by.get((s, rate))
            w = by.get(("ws", rate))
            if "ws" in servers:
                cells.append(
                    fmt(msgs_per_s(r) / msgs_per_s(w), 2) if r and w and msgs_per_s(w) else "—"
                )
            best = max(
                (msgs_per_s(x) for x in rungs if x["server"] == s and x["rate_target"] <= rate),
                default=0,
            )
            cells.append(fmt(msgs_per_s(r) / best, 2) if r and best else "—")
        lines.append(row(*cells))
    return lines


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
        for base in ("ws", "bare", "node", "bare-nodeflate"):
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
    ap = common.parser(__doc__)
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
    ap.add_argument(
        "--client",
        choices=("io", "raw"),
        default="io",
        help="io: official socket.io-client connections; raw: light `ws` clients that speak the "
        "Engine.IO/Socket.IO wire format by hand and only count frames (the generator is not "
        "the limit: use it for the rate ladder)",
    )
    ap.add_argument(
        "--ladder",
        action="store_true",
        help="the rate ladder: --rates 100,200,...,1000 with --client raw and --client-deflate "
        "off unless given",
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
    common.add_quiet_args(ap)
    common.add_ours_args(ap, OURS_BENCH_ENV)
    ap.add_argument(
        "--redis-url",
        default=os.environ.get("OURS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the ours-redis server (its keys get a fresh prefix per start)",
    )
    ap.add_argument("--python", default=common.venv_python(), help="python for the bare server")
    ap.add_argument(
        "--out", default=str(HERE / "results"), help="directory for the JSON + markdown"
    )
    args = ap.parse_args()
    if args.ladder:
        given = set(sys.argv[1:])
        if "--rates" not in given:
            args.rates = ",".join(str(r) for r in range(100, 1001, 100))
        if "--client" not in given:
            args.client = "raw"
        if "--client-deflate" not in given:
            args.client_deflate = "off"
    args.rates = [float(x) for x in common.comma_list(args.rates)]
    common.new_credentials(args)
    servers = common.parse_servers(ap, args.servers, KNOWN_SERVERS)

    common.install_cleanup()
    common.ensure_npm(HERE, ("socket.io-client", "socket.io", "ws"))
    started, outdir, logdir = common.begin_run("fanout", args.out)
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

        results.append(
            common.measure_server(
                partial(FanoutServer, kind, args, logdir, "fanout", OURS_BENCH_ENV),
                tag,
                partial(run_scenario, args=args, sc=sc, rep=rep, tag=tag),
                {"server": kind, "scenario": sc["name"], "repeat": rep + 1},
                starting="starting server on",
            )
        )

    summary = summarize(results, servers, scs)
    report = {
        **common.report_head("fanout", started, args, machine),
        "ours_env": {**OURS_BENCH_ENV, **common.env_pairs(args.ours_env)},
        "results": results,
        "summary": summary,
        "ratios": compute_ratios(summary),
        "notes": notes,
        "server_logs": str(logdir),
    }
    common.write_reports(outdir, "fanout", started, report, render_md)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
