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

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import Sampler, Server, fmt, loadavg, log, row  # noqa: E402

common.set_log_name("messages")

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
        common.venv_python(),
        PY_PACKAGES,
        extra={"socket.io-client": common.npm_version(HERE, "socket.io-client")},
    )


# ------------------------------------------------------------------ one scenario
def run_loadgen(srv: Server, rate: float, args, sampler: Sampler) -> dict:
    argv = [
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
    # setup + send + acks + drain, plus margin: past this the load generator is killed
    timeout = args.setup_timeout + args.duration + args.ack_timeout + args.drain_max + 60
    root_cpu: dict[str, float] = {}  # the `ours` process alone, without PostgreSQL
    waits: dict[str, tuple[float, float | None]] = {}

    def on_phase(phase: str) -> None:
        st = common.proc_stat(sampler.root)
        root_cpu[phase] = st[1] if st else 0.0
        waits[phase] = (run_queue_wait_s(sampler.root), cpu_pressure_s())

    result, marks = common.run_loadgen(
        HERE / "loadgen.js",
        argv,
        env={"BENCH_JWT_SECRET": args.jwt_secret},
        timeout=timeout,
        tag=f"{rate:g}/s",
        server=sampler,
        on_phase=on_phase,
    )
    if "send_start" in marks and "drain_end" in marks:
        m0, m1 = marks["send_start"], marks["drain_end"]
        wall = max(m1.t - m0.t, 1e-6)
        result["server_cpu_s"] = round(m1.server_cpu - m0.server_cpu, 2)
        if "send_end" in marks:
            m2 = marks["send_end"]
            send_s = max(m2.t - m0.t, 1e-6)
            result["server_cores_send"] = round((m2.server_cpu - m0.server_cpu) / send_s, 2)
            result["ours_process_cores_send"] = round(
                (root_cpu["send_end"] - root_cpu["send_start"]) / send_s, 2
            )
        result["server_rss_mib_end"] = round(m1.server_rss / 2**20, 1)
        # busy cores over [send start, drain end]: the server (+ its PostgreSQL), the load
        # generator and everything else on the machine
        result["busy_cores"] = common.cores_between(m0, m1)
        # interference: how long the `ours` process was runnable but had no CPU, and the share
        # of the time some task on the machine waited for a CPU (PSI "some")
        (w0, p0), (w1, p1) = waits["send_start"], waits["drain_end"]
        result["ours_run_queue_wait_pct"] = round(100 * (w1 - w0) / wall, 1)
        if p0 is not None and p1 is not None:
            result["cpu_pressure_pct"] = round(100 * (p1 - p0) / wall, 1)
    result["server_rss_mib_peak"] = round(sampler.peak_rss / 2**20, 1)
    return result


def check_database(srv: Server, args, conversations: list[dict]) -> dict:
    """dbcheck.py against the running server's database: seqs gap-free per conversation, one
    row per client_msg_id, every acked message stored."""
    python = str(Path(args.ours_bin).parent / "python")
    env = dict(os.environ, OURS_DATA_DIR=str(srv.datadir), PYTHONPATH=str(common.REPO))
    try:
        done = subprocess.run(
            [python, str(HERE / "dbcheck.py")],
            input=json.dumps({"conversations": conversations}),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        err = getattr(e, "stderr", "") or ""
        return {"ok": False, "error": f"{type(e).__name__}: {str(err)[-400:]}"}


def kept_up(r: dict) -> bool:
    """A rate the server kept up with: nothing lost, no ack timeouts, delivered during the send
    window at >= 95 % of the target, and no more than 1 s of backlog after the last send."""
    return (
        "error" not in r
        and r["lost"] == 0
        and r["ack_timeouts"] == 0
        and r["window_delivered_per_s"] >= 0.95 * r["rate_target"]
        and (r["drain_s"] or 0) <= 1.0
    )


def falls_behind(results: list[dict]) -> dict:
    """The highest rate of the ladder kept up with, and the first one that was not."""
    ok = [r["rate"] for r in results if kept_up(r)]
    behind = [r["rate"] for r in results if not kept_up(r)]
    return {"kept_up_to": max(ok) if ok else None, "behind_at": min(behind) if behind else None}


def invariants_ok(r: dict) -> bool:
    """Nothing lost or duplicated, seq gap-free, in order, and matching the acks (clients),
    and the database agrees."""
    return (
        r["lost"] == 0
        and r["duplicates"] == 0
        and r["seq_gaps"] == 0
        and r["seq_out_of_order"] == 0
        and r["seq_ack_mismatch"] == 0
        and r["seq_invalid"] == 0
        and r["wrong_conversation"] == 0
        and r["wrong_sender"] == 0
        and bool(r.get("database", {}).get("ok"))
    )


def run_rate(srv: Server, args, rate: float, tag: str) -> dict:
    """One rate against a started server: wait for a quiet machine, run the load generator
    while sampling the server."""
    background = common.wait_for_quiet(args, tag)
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
    r["database"] = check_database(srv, args, r.pop("conversations_seen", []))
    r["invariants_ok"] = invariants_ok(r)
    r["background_busy_cores_before"] = background
    r["loadavg_before"], r["loadavg_after"] = before, loadavg()
    ack, dl = r["ack_latency_ms"], r["delivery_latency_ms"]
    log(
        f"{tag} | sent {r['sent']:,} acked {r['acked']:,} delivered {r['delivered']:,} "
        f"lost {r['lost']:,}; ack p50/p99 {ack['p50']}/{ack['p99']} ms; delivery "
        f"p50/p99/max {dl['p50']}/{dl['p99']}/{dl['max']} ms; {r['delivered_per_s']}/s; "
        f"busy cores {r.get('busy_cores')}"
    )
    db = r["database"]
    log(
        f"{tag} | checks {'PASS' if r['invariants_ok'] else 'FAIL'}: duplicates {r['duplicates']}, "
        f"seq gaps {r['seq_gaps']}, out of order {r['seq_out_of_order']}, ack/new seq mismatch "
        f"{r['seq_ack_mismatch']}; database {json.dumps(db)}"
    )
    return r


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
    "checks",
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


def extra_env(ours_env: dict[str, str]) -> dict[str, str]:
    """What a run's server environment changed from `OURS_BENCH_ENV` (with --ours-env)."""
    return {k: v for k, v in ours_env.items() if OURS_BENCH_ENV.get(k) != v}


def history(outdir: Path) -> list[dict]:
    """Every recorded run in the results directory, oldest first: one row per rate."""
    return [
        {"run": rep["started_at"], "extra_env": extra_env(rep.get("ours_env", {})), **r}
        for rep, r in common.recorded_results(outdir, "messages")
    ]


def history_table(rows: list[dict]) -> list[str]:
    lines = common.table_head(HIST_COLS)
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
    extra = extra_env(report["ours_env"])
    software = (
        f"{common.packages_md(m['python_packages'])}; socket.io-client {m['socket.io-client']}"
    )
    lines = [
        *common.md_head(heading, "Direct messages benchmark", report),
        common.machine_md(m, software),
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
        *common.table_head(COLS, left=0),
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(common.error_row(COLS, (f"{r['rate']:g}/s",), r["error"]))
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
                "pass" if r.get("invariants_ok") else "**FAIL**",
            )
        )
    fb = report.get("falls_behind") or {}
    lines += [
        "",
        f"Kept up (nothing lost, no ack timeout, ≥ 95 % of the rate delivered while sending, "
        f"≤ 1 s backlog) up to {fmt(fb.get('kept_up_to'))}/s; fell behind at "
        f"{fmt(fb.get('behind_at')) + '/s' if fb.get('behind_at') else 'no rate of the ladder'}."
        " Checks: every acked message delivered once, in the right conversation from the right "
        "sender; per conversation the seqs received rise and cover 1..max, each equal to its "
        "ack's; the database holds seqs 1..n and `last_seq` = n per conversation, one row per "
        "client_msg_id and every acked message. Load generator late (sender lag p99 > 10 ms) at: "
        + (
            ", ".join(
                f"{r['rate_target']:g}/s"
                for r in report["results"]
                if "error" not in r and (r["sender_lag_ms"]["p99"] or 0) > 10
            )
            or "no rate"
        )
        + ".",
        "",
        "Details per rate:",
        "",
    ]
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
            f"{r['disconnects']}; setup {fmt(r['setup_s'], 1)} s; seq gaps / out of order / "
            f"ack mismatch {r['seq_gaps']} / {r['seq_out_of_order']} / {r['seq_ack_mismatch']};"
            f" database {json.dumps(r.get('database'))}."
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
        lines += common.history_md(report["results_dir"], history_table(hist))
    lines += common.notes_md(report.get("notes") or [])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument(
        "--rates", default="500,1000,2000,3000", help="comma list of total messages/s (a ladder)"
    )
    ap.add_argument("--duration", type=float, default=20, help="send seconds per rate")
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--body-bytes", type=int, default=100)
    ap.add_argument("--ack-timeout", type=float, default=30)
    ap.add_argument("--drain-max", type=float, default=30, help="max s after the last send")
    ap.add_argument("--setup-timeout", type=float, default=180, help="connect + open, max s")
    ap.add_argument("--client-deflate", choices=("on", "off"), default="on")
    common.add_quiet_args(ap)
    common.add_ours_args(ap, OURS_BENCH_ENV)
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
        common.attach_history(saved, Path(args.out), history)
        common.write_doc(
            "messages", render_md(saved, heading="###"), DOC_TITLE, f" from {args.doc_from}"
        )
        return 0
    rates = [float(x) for x in common.comma_list(args.rates)]
    common.new_credentials(args)
    if not os.access(args.ours_bin, os.X_OK):
        ap.error(f"{args.ours_bin} not found (create the venv: see README.md)")

    common.install_cleanup()
    common.ensure_npm(HERE)
    started, outdir, logdir = common.begin_run("messages", args.out)
    machine = machine_info()
    log(
        f"{len(rates)} rate(s) {args.rates}/s, {args.conversations} conversations, "
        f"{args.duration:g}s each; load average {loadavg()}; server logs in {logdir}"
    )
    results: list[dict] = []
    for n, rate in enumerate(rates, 1):
        tag = f"[{n}/{len(rates)}] {rate:g}/s"
        results.append(
            common.measure_server(
                partial(Server, "ours", args, logdir, "messages", OURS_BENCH_ENV),
                tag,
                partial(run_rate, args=args, rate=rate, tag=tag),
                {"rate": rate},
                starting="starting ours on",
            )
        )

    report = {
        **common.report_head("messages", started, args, machine),
        "ours_env": {**OURS_BENCH_ENV, **common.env_pairs(args.ours_env)},
        "results": results,
        "falls_behind": falls_behind(results),
        "server_logs": str(logdir),
    }
    doc_title = DOC_TITLE if args.write_doc else None
    common.write_reports(outdir, "messages", started, report, render_md, history, doc_title)
    log(f"falls behind: {json.dumps(report['falls_behind'])}")
    return 0 if all("error" not in r and r["invariants_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
