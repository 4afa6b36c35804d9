"""bench/messages runner: message:send -> message:new latency over many direct conversations.

For every rate in --rates: starts `ours serve` on a free 127.0.0.1 port with a fresh temporary
OURS_DATA_DIR (embedded PostgreSQL) and the per-user / per-IP / connect rate limits raised (every
client comes from 127.0.0.1), runs the Node load generator (loadgen.js: 2 x --conversations
socket.io-client connections on /messages, conversation:open, then --duration seconds of
message:send at the rate, open loop), samples the server's CPU and RSS, stops the server and goes
on. Writes results/messages-<UTC stamp>.{json,md}; with --write-doc also the results section of
docs/benchmarks-messages.md. Standard library only; bounded in time; stops every child process
on exit, error, SIGINT or SIGTERM.

    bench/messages/run --conversations 200 --rates 500,1000 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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
    datadirs,
    ensure_npm,
    fmt,
    free_port,
    install_cleanup,
    kill_group,
    loadavg,
    log,
    log_tail,
    machine_busy,
    npm_version,
    proc_stat,
    release_datadir,
    row,
    spawn,
    stop,
    venv_python,
    wait_for_quiet,
    wait_healthy,
    write_doc,
)

common.set_log_name("messages")

DOC = REPO / "docs" / "benchmarks-messages.md"
DOC_BEGIN = "<!-- bench/messages results: written by `bench/messages/run --write-doc` -->"
DOC_END = "<!-- /bench/messages results -->"
DOC_TITLE = "# Benchmarks: direct messages\n"
RAISED = "1000000"  # the rate-limit settings' maximum (config/__init__.py)
OURS_BENCH_ENV = {
    "OURS_RATE_USER_PER_MIN": RAISED,
    "OURS_RATE_IP_PER_MIN": RAISED,
    "OURS_RATE_CONNECT_PER_MIN": RAISED,
}


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of `pid` spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for t in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(t.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def cpu_pressure_s() -> float | None:
    """Machine-wide seconds during which some task waited for a CPU (PSI), if available."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1]) / 1e6


PY_PACKAGES = ("python-socketio", "python-engineio", "aiohttp", "uvloop", "asyncpg")


def machine_info() -> dict:
    return common.machine_info(
        venv_python(),
        PY_PACKAGES,
        extra={"socket.io-client": npm_version(HERE, "socket.io-client")},
    )


# ------------------------------------------------------------------ server
class Ours:
    """One `ours serve` on a free port with a fresh data dir."""

    def __init__(self, args, logdir: Path) -> None:
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.datadir = tempfile.mkdtemp(prefix="ours-bench-messages-")
        datadirs.append(self.datadir)
        self.logfile = logdir / f"ours-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            OURS_DATA_DIR=self.datadir,
            OURS_JWT_SECRET=self.args.jwt_secret,
            OURS_API_KEYS=self.args.api_key,
            PYTHONUNBUFFERED="1",
        )
        env.update(OURS_BENCH_ENV)
        env.update(dict(kv.split("=", 1) for kv in self.args.ours_env))
        with open(self.logfile, "ab") as fh:
            self.proc = spawn(
                [self.args.ours_bin, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        wait_healthy(self.proc, self.url, self.args.ours_startup_timeout, "ours")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        release_datadir(self.datadir)

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.logfile, n)


# ------------------------------------------------------------------ one scenario
def run_loadgen(srv: Ours, rate: float, args, sampler: Sampler) -> dict:
    cmd = [
        "node", str(HERE / "loadgen.js"),
        "--url", srv.url,
        "--conversations", str(args.conversations),
        "--rate", f"{rate:g}",
        "--duration", f"{args.duration:g}",
        "--workers", str(args.workers),
        "--body-bytes", str(args.body_bytes),
        "--ack-timeout", f"{args.ack_timeout:g}",
        "--drain-max", f"{args.drain_max:g}",
        "--setup-timeout", f"{args.setup_timeout:g}",
        "--client-deflate", args.client_deflate,
    ]  # fmt: skip
    env = dict(os.environ, BENCH_JWT_SECRET=args.jwt_secret)
    # setup + send + acks + drain, plus margin: past this the load generator is killed
    hard_timeout = args.setup_timeout + args.duration + args.ack_timeout + args.drain_max + 60
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
    lg = Sampler(p.pid, None)
    killer = threading.Timer(hard_timeout, lambda: kill_group(p, 2))
    killer.start()
    result, error, marks = None, None, {}
    root_cpu: dict[str, float] = {}  # the `ours` process alone, without PostgreSQL
    waits: dict[str, tuple[float, float | None]] = {}
    stderr_lines: list[str] = []
    assert p.stdout is not None and p.stderr is not None
    pout, perr = p.stdout, p.stderr
    t_err = threading.Thread(target=lambda: stderr_lines.extend(perr), daemon=True)
    t_err.start()
    try:
        for line in pout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                log(f"  loadgen: {line.rstrip()}")
                continue
            kind = ev.get("event")
            if kind == "progress":
                log(f"  {rate:g}/s | {ev['msg']}")
            elif kind == "phase":
                cpu, rss = sampler.sample()
                st = proc_stat(sampler.root)
                marks[ev["phase"]] = (time.time(), cpu, rss, lg.sample()[0], machine_busy())
                root_cpu[ev["phase"]] = st[1] if st else 0.0
                waits[ev["phase"]] = (run_queue_wait_s(sampler.root), cpu_pressure_s())
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
    if "send_start" in marks and "drain_end" in marks:
        (t0, c0, _, l0, m0), (t1, c1, rss1, l1, m1) = marks["send_start"], marks["drain_end"]
        wall = max(t1 - t0, 1e-6)
        result["server_cpu_s"] = round(c1 - c0, 2)
        if "send_end" in marks:
            t2, c2 = marks["send_end"][:2]
            result["server_cores_send"] = round((c2 - c0) / max(t2 - t0, 1e-6), 2)
            result["ours_process_cores_send"] = round(
                (root_cpu["send_end"] - root_cpu["send_start"]) / max(t2 - t0, 1e-6), 2
            )
        result["server_rss_mib_end"] = round(rss1 / 2**20, 1)
        # busy cores over [send start, drain end]: the server (+ its PostgreSQL), the load
        # generator and everything else on the machine (other work skews the results)
        result["busy_cores"] = {
            "machine": round((m1 - m0) / wall, 2),
            "server": round((c1 - c0) / wall, 2),
            "loadgen": round((l1 - l0) / wall, 2),
            "other": round(max(0.0, (m1 - m0) - (c1 - c0) - (l1 - l0)) / wall, 2),
        }
        # interference: how long the `ours` process was runnable but had no CPU, and the share
        # of the time some task on the machine waited for a CPU (PSI "some")
        (w0, p0), (w1, p1) = waits["send_start"], waits["drain_end"]
        result["ours_run_queue_wait_pct"] = round(100 * (w1 - w0) / wall, 1)
        if p0 is not None and p1 is not None:
            result["cpu_pressure_pct"] = round(100 * (p1 - p0) / wall, 1)
    result["server_rss_mib_peak"] = round(sampler.peak_rss / 2**20, 1)
    result.pop("event", None)
    return result


# ------------------------------------------------------------------ report
COLS = (
    "rate (target)",
    "conversations ready",
    "sent",
    "acked",
    "delivered",
    "lost",
    "ack p50 / p99 ms",
    "delivery p50 / p99 / max ms",
    "delivered/s",
    "drain s",
    "sender lag p99 ms",
    "CPU cores: server+pg / loadgen / other",
    "ours waited for a CPU %",
    "load avg before → after",
)
HIST_COLS = (
    "run (UTC)",
    "rate",
    "delivered / sent",
    "lost",
    "ack p50 / p99 ms",
    "delivery p50 / p99 / max ms",
    "delivered/s",
    "CPU cores: server+pg / other",
    "ours waited for a CPU %",
    "load avg before",
    "extra server env",
)


def history(outdir: Path) -> list[dict]:
    """Every recorded run in the results directory, oldest first: one row per rate."""
    rows = []
    for path in sorted(outdir.glob("messages-*.json")):
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for r in rep.get("results", []):
            if "error" not in r:
                extra = {
                    k: v for k, v in rep.get("ours_env", {}).items() if OURS_BENCH_ENV.get(k) != v
                }
                rows.append({"run": rep["started_at"], "extra_env": extra, **r})
    return rows


def history_md(rows: list[dict]) -> list[str]:
    lines = [row(*HIST_COLS), row(*(["---"] + ["---:"] * (len(HIST_COLS) - 1)))]
    for r in rows:
        ack, dl, c = r["ack_latency_ms"], r["delivery_latency_ms"], r.get("busy_cores") or {}
        lb = r.get("loadavg_before") or []
        lines.append(
            row(
                r["run"][:16].replace("T", " "),
                f"{r['rate_target']:g}/s",
                f"{fmt(r['delivered'])} / {fmt(r['sent'])}",
                fmt(r["lost"]),
                f"{fmt(ack['p50'])} / {fmt(ack['p99'])}",
                f"{fmt(dl['p50'])} / {fmt(dl['p99'])} / {fmt(dl['max'])}",
                fmt(r["delivered_per_s"]),
                f"{c['server']:.2f} / {c['other']:.2f}" if c else "n/a",
                fmt(r.get("ours_run_queue_wait_pct")),
                fmt(lb[0]) if lb else "n/a",
                " ".join(f"{k}={v}" for k, v in r["extra_env"].items()) or "-",
            )
        )
    return lines


def render_md(report: dict, heading: str = "#") -> str:
    m, a = report["machine"], report["args"]
    pk = m["python_packages"]
    pkgs = ", ".join(f"{k} {v}" for k, v in pk.items() if k != "python")
    dirty = " (server/ dirty)" if m["git_dirty"] else ""
    extra = {k: v for k, v in report["ours_env"].items() if OURS_BENCH_ENV.get(k) != v}
    lines = [
        f"{heading} Direct messages benchmark, {report['started_at']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['nproc']} vCPU {m['cpu_model']}, {m['mem_total_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}; Node {m['node']}, Python {pk.get('python')}; {pkgs}; "
        f"socket.io-client {m['socket.io-client']}; git {m['git_commit']}{dirty}.",
        "",
        f"Load: {a['conversations']} direct conversations, {2 * a['conversations']} users, one "
        f"socket.io-client connection each on `/messages` (websocket, {a['workers']} worker "
        f"processes); {a['duration']:g} s of `message:send` per rate, open loop, spread round-"
        f"robin over the conversations; body {a['body_bytes']} B; latencies from the scheduled "
        "send time (same clock); lost = acked but no `message:new` at the other member "
        f"{a['drain_max']:g} s after the last send. A fresh server (and database) per rate. "
        "CPU cores = busy cores over the send + drain window (other = everything else running "
        "on the machine); ours waited for a CPU = time the `ours` process's threads were "
        "runnable but not running (schedstat), as a share of that window.",
        *(
            ["", "Extra server environment: " + ", ".join(f"`{k}={v}`" for k, v in extra.items())]
            if extra
            else []
        ),
        "",
        row(*COLS),
        row(*(["---:"] * len(COLS))),
    ]
    for r in report["results"]:
        if "error" in r:
            err = r["error"].replace("|", "/").replace("\n", " ")[:200]
            lines.append(row(f"{r['rate']:g}/s", err, *([""] * (len(COLS) - 2))))
            continue
        ack, dl, lag = r["ack_latency_ms"], r["delivery_latency_ms"], r["sender_lag_ms"]
        c = r.get("busy_cores") or {}
        lb, la = r.get("loadavg_before") or [], r.get("loadavg_after") or []
        lines.append(
            row(
                f"{r['rate_target']:g}/s",
                f"{r['conversations_ready']}/{r['conversations']}",
                fmt(r["sent"]),
                fmt(r["acked"]),
                fmt(r["delivered"]),
                fmt(r["lost"]),
                f"{fmt(ack['p50'])} / {fmt(ack['p99'])}",
                f"{fmt(dl['p50'])} / {fmt(dl['p99'])} / {fmt(dl['max'])}",
                fmt(r["delivered_per_s"]),
                fmt(r["drain_s"], 2),
                fmt(lag["p99"]),
                f"{c.get('server', 0):.2f} / {c.get('loadgen', 0):.2f} / {c.get('other', 0):.2f}"
                if c
                else "n/a",
                fmt(r.get("ours_run_queue_wait_pct")),
                f"{lb[0] if lb else 'n/a'} → {la[0] if la else 'n/a'}",
            )
        )
    lines += ["", "Details per rate:", ""]
    for r in report["results"]:
        if "error" in r:
            continue
        errs = r["ack_error_codes"] or {}
        lines.append(
            f"- {r['rate_target']:g}/s: sent {fmt(r['sent'])} in {fmt(r['send_window_s'], 2)} s; "
            f"ack errors {fmt(r['ack_errors'])}{' ' + json.dumps(errs) if errs else ''}, ack "
            f"timeouts {fmt(r['ack_timeouts'])}; duplicates {fmt(r['duplicates'])}, wrong "
            f"conversation/sender {r['wrong_conversation']}/{r['wrong_sender']}, deliveries with "
            f"`meta.offsets` {fmt(r['deliveries_with_meta_offsets'])}; delivered during the send "
            f"window {fmt(r['window_delivered_per_s'])}/s; delivery p90 "
            f"{fmt(r['delivery_latency_ms']['p90'])} ms, p99.9 "
            f"{fmt(r['delivery_latency_ms']['p999'])} ms; ack max "
            f"{fmt(r['ack_latency_ms']['max'])} ms; server CPU while sending "
            f"{fmt(r.get('server_cores_send'), 2)} cores (the `ours` process alone "
            f"{fmt(r.get('ours_process_cores_send'), 2)}), server+PostgreSQL RSS peak "
            f"{fmt(r.get('server_rss_mib_peak'))} MiB; other work before the run "
            f"{fmt(r.get('background_busy_cores_before'), 2)} busy cores; some task on the "
            f"machine waited for a CPU {fmt(r.get('cpu_pressure_pct'))} % of the time (PSI); "
            "disconnects "
            f"{r['disconnects']}; setup {fmt(r['setup_s'], 1)} s."
        )
        secs = r.get("delivery_by_send_second") or []
        if secs:
            lines.append(
                "  Delivery p50 / p99 ms by send second: "
                + ", ".join(
                    f"{x['s']}: {fmt(x['p50'], 0)} / {fmt(x['p99'], 0)}" for x in secs if x["n"]
                )
                + f"; deliveries per second received: {r['timeline_per_s']}."
            )
    hist = report.get("history") or []
    if len(hist) > 1:
        lines += [
            "",
            f"Every run recorded in `{report['results_dir']}` (the one above included):",
            "",
            *history_md(hist),
        ]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--rates", default="500,1000", help="comma list of total messages/s")
    ap.add_argument("--duration", type=float, default=20, help="send seconds per rate")
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--body-bytes", type=int, default=100)
    ap.add_argument("--ack-timeout", type=float, default=30)
    ap.add_argument("--drain-max", type=float, default=30, help="max s after the last send")
    ap.add_argument("--setup-timeout", type=float, default=180, help="connect + open, max s")
    ap.add_argument("--client-deflate", choices=("on", "off"), default="on")
    ap.add_argument("--quiet-wait", type=float, default=120, help="max s to wait for quiet")
    ap.add_argument("--quiet-cores", type=float, default=0.3, help="busy cores counting as quiet")
    ap.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "ours"))
    ap.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `ours serve` (repeatable); defaults raise the limits: "
        + " ".join(f"{k}={v}" for k, v in OURS_BENCH_ENV.items()),
    )
    ap.add_argument("--ours-startup-timeout", type=float, default=120)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="also replace the results section of docs/benchmarks-messages.md",
    )
    ap.add_argument(
        "--doc-from",
        metavar="REPORT.json",
        help="run nothing: rewrite the docs section from a saved report (+ the runs in --out)",
    )
    args = ap.parse_args()
    if args.doc_from:
        saved = json.loads(Path(args.doc_from).read_text())
        outdir = Path(args.out)
        saved["history"] = history(outdir)
        saved["results_dir"] = str(
            outdir.relative_to(REPO) if outdir.is_relative_to(REPO) else outdir
        )
        write_doc(DOC, DOC_BEGIN, DOC_END, render_md(saved, heading="###"), DOC_TITLE)
        log(f"wrote the results section of {DOC.relative_to(REPO)} from {args.doc_from}")
        return 0
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.api_key = "bench-" + secrets.token_hex(8)
    args.jwt_secret = secrets.token_hex(32)
    if not os.access(args.ours_bin, os.X_OK):
        ap.error(f"{args.ours_bin} not found (create the venv: see README.md)")

    install_cleanup()
    ensure_npm(HERE)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="bench-messages-logs-"))
    machine = machine_info()
    log(
        f"{len(rates)} rate(s) {args.rates}/s, {args.conversations} conversations, "
        f"{args.duration:g}s each; load average {loadavg()}; server logs in {logdir}"
    )
    results: list[dict] = []
    for n, rate in enumerate(rates, 1):
        tag = f"[{n}/{len(rates)}] {rate:g}/s"
        srv = None
        try:
            srv = Ours(args, logdir)
            log(f"{tag} | starting ours on {srv.url}")
            t = time.time()
            srv.start()
            log(f"{tag} | healthy after {time.time() - t:.1f}s")
            background = wait_for_quiet(args, tag)
            before = loadavg()
            log(f"{tag} | start (load average {before})")
            assert srv.proc is not None
            sampler = Sampler(srv.proc.pid, srv.datadir)
            sampler.sample()
            sampler.start()
            try:
                r = run_loadgen(srv, rate, args, sampler)
            finally:
                sampler.halt()
            r["rate"] = rate
            r["background_busy_cores_before"] = background
            r["loadavg_before"], r["loadavg_after"] = before, loadavg()
            results.append(r)
            ack, dl = r["ack_latency_ms"], r["delivery_latency_ms"]
            log(
                f"{tag} | sent {r['sent']:,} acked {r['acked']:,} delivered {r['delivered']:,} "
                f"lost {r['lost']:,}; ack p50/p99 {ack['p50']}/{ack['p99']} ms; delivery "
                f"p50/p99/max {dl['p50']}/{dl['p99']}/{dl['max']} ms; {r['delivered_per_s']}/s; "
                f"busy cores {r.get('busy_cores')}"
            )
        except Exception as e:
            log(f"{tag} | FAILED: {e}")
            entry = {"rate": rate, "error": str(e)}
            if srv is not None:
                entry["server_log_tail"] = srv.log_tail()
                log(f"ours log tail:\n{entry['server_log_tail']}")
            results.append(entry)
        finally:
            if srv is not None:
                srv.stop()

    report = {
        "benchmark": "bench/messages",
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/messages/run " + " ".join(sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items() if k not in ("api_key", "jwt_secret", "out")},
        "machine": machine,
        "ours_env": {**OURS_BENCH_ENV, **dict(kv.split("=", 1) for kv in args.ours_env)},
        "results": results,
        "server_logs": str(logdir),
    }
    jpath = outdir / f"messages-{stamp}.json"
    mpath = outdir / f"messages-{stamp}.md"
    jpath.write_text(json.dumps(report, indent=2) + "\n")
    report["history"] = history(outdir)
    report["results_dir"] = str(outdir.relative_to(REPO) if outdir.is_relative_to(REPO) else outdir)
    md = render_md(report)
    mpath.write_text(md)
    print()
    print(md)
    if args.write_doc:
        write_doc(DOC, DOC_BEGIN, DOC_END, render_md(report, heading="###"), DOC_TITLE)
        log(f"wrote the results section of {DOC.relative_to(REPO)}")
    log(f"wrote {jpath} and {mpath.name}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
