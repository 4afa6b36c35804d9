"""bench/idle runner: memory per idle socket.

For every server in --servers: raises the open-files limit (inherited by the servers and the
load generator), starts the server on a free 127.0.0.1 port exactly as bench/fanout/run.py does
(`ours serve` with a fresh temporary OURS_DATA_DIR and the connect / IP / user rate limits
raised; bench/fanout/bare_server.py; bench/fanout/node_server.js), waits for its resident memory
to settle and reads VmRSS from /proc/<pid>/status ("before"); connects --clients official
socket.io-client sockets to /feed (websocket, --workers Node processes, each socket joins
`zone:idle`), waits until VmRSS is stable again ("after"), holds --hold seconds, checks that every
socket is still connected and that a sample answers a `room:join` ack, and reports
(after - before) / connected sockets in KiB. Writes results/idle-<UTC stamp>.{json,md}; with
--write-doc also the results section of docs/benchmarks-idle.md. Standard library only; bounded
in time; stops every child process on exit, error, SIGINT or SIGTERM.

    bench/idle/run --clients 5000 --workers 4 --connect-concurrency 10 \
        --servers ours,bare,bare-nodeflate,node
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import FANOUT, Server, fmt, loadavg, log, machine_busy, row  # noqa: E402

common.set_log_name("idle")

DOC_TITLE = "# Benchmarks: idle sockets\n"
KNOWN_SERVERS = ("ours", "bare", "bare-nodeflate", "node")
RAISED = "1000000"  # the rate-limit settings' maximum (config/__init__.py)
OURS_BENCH_ENV = {
    "OURS_RATE_CONNECT_PER_MIN": RAISED,
    "OURS_RATE_IP_PER_MIN": RAISED,
    "OURS_RATE_USER_PER_MIN": RAISED,
}
NOFILE = 65536


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE to 65536 (children inherit it); the hard limit only if allowed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in ((NOFILE, max(hard, NOFILE)), (min(NOFILE, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def vmrss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB (from /proc/<pid>/status), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_rss_kib(root: int, also: str | None) -> int:
    """Summed VmRSS of a process tree (shared pages count once per process)."""
    return sum(vmrss_kib(p) or 0 for p in common.tree(root, also))


def cpu_s(pid: int) -> float:
    st = common.proc_stat(pid)
    return st[1] if st else 0.0


def wait_stable(pid: int, window: int, tol_kib: int, max_s: float) -> tuple[int, bool, list]:
    """Sample VmRSS once a second until the last `window` samples lie within `tol_kib`
    (or `max_s` passed). Returns (last sample, stable?, samples)."""
    samples: list[int] = []
    deadline = time.time() + max_s
    while True:
        v = vmrss_kib(pid)
        if v is None:
            raise RuntimeError("server exited")
        samples.append(v)
        last = samples[-window:]
        if len(last) == window and max(last) - min(last) <= tol_kib:
            return v, True, samples
        if time.time() >= deadline:
            return v, False, samples
        time.sleep(1)


# ------------------------------------------------------------------ helpers
PY_PACKAGES = ("python-socketio", "python-engineio", "aiohttp", "uvloop")


def machine_info(py: str) -> dict:
    return common.machine_info(
        py,
        PY_PACKAGES,
        extra={
            "socket.io-client": common.npm_version(HERE, "socket.io-client"),
            "socket.io (node server)": common.npm_version(FANOUT, "socket.io"),
        },
    )


# ------------------------------------------------------------------ load generator
class Loadgen:
    """The Node load generator, driven by commands on its stdin."""

    def __init__(self, srv: Server, args) -> None:
        cmd = [
            "node", str(HERE / "loadgen.js"),
            "--url", srv.url,
            "--clients", str(args.clients),
            "--workers", str(args.workers),
            "--connect-timeout", f"{args.connect_timeout:g}",
            "--connect-concurrency", str(args.connect_concurrency),
            "--client-deflate", args.client_deflate,
        ]  # fmt: skip
        env = dict(os.environ, BENCH_JWT_SECRET=args.jwt_secret)
        self.tag = srv.kind
        self.p = common.spawn(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=HERE,
        )
        self.events: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.p.stderr is not None
        perr = self.p.stderr
        threading.Thread(target=lambda: self.stderr.extend(perr), daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                log(f"  loadgen: {line.rstrip()}")
        self.events.put(None)

    def expect(self, kind: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                if time.time() >= deadline:
                    raise RuntimeError(f"loadgen: no {kind} within {timeout:g}s") from None
                continue
            if ev is None:
                tail = "".join(self.stderr)[-800:]
                raise RuntimeError(f"loadgen exited (rc={self.p.poll()}) before {kind}: {tail}")
            if ev.get("event") == "progress":
                log(f"  {self.tag} | {ev['msg']}")
            elif ev.get("event") == "error":
                raise RuntimeError(f"loadgen: {ev.get('error')}")
            elif ev.get("event") == kind:
                return ev

    def command(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def close(self) -> None:
        try:
            self.command("close")
            self.p.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        common.stop(self.p, grace=2)


# ------------------------------------------------------------------ one server
def measure(srv: Server, args, tag: str) -> dict:
    """Wait for a quiet machine, then the server's VmRSS before and after the idle sockets."""
    background = common.wait_for_quiet(args, tag)
    assert srv.proc is not None
    pid = srv.proc.pid
    r: dict = {"server": srv.kind, "clients": args.clients}
    before, settled, _ = wait_stable(pid, 5, args.stable_tol_kib, 30)
    r["rss_before_kib"], r["settled_before"] = before, settled
    r["tree_rss_before_kib"] = tree_rss_kib(pid, srv.datadir)
    r["loadavg_before"] = loadavg()
    log(f"{srv.kind} | VmRSS before {before / 1024:.1f} MiB (settled: {settled}); connecting")
    c_conn = cpu_s(pid)
    lg = Loadgen(srv, args)
    try:
        m0 = machine_busy()
        t0 = time.time()
        ready = lg.expect("ready", args.connect_timeout + 30)
        r.update(
            joined=ready["joined"],
            connect_failed=ready["failed"],
            connect_errors=ready["errors"],
            connect_s=ready["connect_s"],
            ws_extensions=ready["ws_extensions"],
            connect_busy_cores=round((machine_busy() - m0) / max(1e-6, time.time() - t0), 2),
            server_cpu_s_connect=round(cpu_s(pid) - c_conn, 2),
        )
        if ready["joined"]:
            r["server_cpu_ms_per_connect"] = round(
                1000 * r["server_cpu_s_connect"] / ready["joined"], 2
            )
        log(
            f"{srv.kind} | {ready['joined']:,}/{args.clients:,} joined in {ready['connect_s']} s "
            f"(errors {ready['errors'] or 'none'}); waiting for VmRSS to settle"
        )
        after, stable, samples = wait_stable(
            pid, args.stable_window, args.stable_tol_kib, args.stable_max
        )
        r.update(rss_after_kib=after, stable=stable, stable_wait_s=len(samples))
        r["tree_rss_after_kib"] = tree_rss_kib(pid, srv.datadir)
        log(
            f"{srv.kind} | VmRSS after {after / 1024:.1f} MiB (stable: {stable}, "
            f"{len(samples)} s); holding {args.hold:g} s"
        )
        # hold: sample VmRSS and the server's CPU (heartbeats only)
        c0, hold0, m0 = cpu_s(pid), time.time(), machine_busy()
        hold: list[int] = []
        while time.time() - hold0 < args.hold:
            v = vmrss_kib(pid)
            if v is None:
                raise RuntimeError("server exited during the hold")
            hold.append(v)
            time.sleep(1)
        wall = time.time() - hold0
        r.update(
            rss_hold_end_kib=hold[-1],
            rss_hold_min_kib=min(hold),
            rss_hold_max_kib=max(hold),
            hold_s=round(wall, 1),
            server_cores_idle=round((cpu_s(pid) - c0) / wall, 3),
            machine_busy_cores_hold=round((machine_busy() - m0) / wall, 2),
        )
        lg.command("status")
        st = lg.expect("status", 40)
        lg.command(f"verify {args.verify}")
        ver = lg.expect("verify", 60)
        r.update(
            connected_after_hold=st["connected"],
            joined_after_hold=st["joined"],
            disconnects=st["disconnects"],
            disconnect_reasons=st["disconnect_reasons"],
            pings_received=st["pings"],
            loadgen_worker_rss_mib=st["worker_rss_mib"],
            verify=ver,
            loadavg_after=loadavg(),
        )
        n = r["joined"]
        if n:
            r["kib_per_socket"] = round((after - before) / n, 1)
            r["kib_per_socket_hold_end"] = round((hold[-1] - before) / n, 1)
            r["kib_per_socket_tree"] = round(
                (r["tree_rss_after_kib"] - r["tree_rss_before_kib"]) / n, 1
            )
        log(
            f"{srv.kind} | after hold: {st['connected']:,} connected, {st['disconnects']} "
            f"disconnects, {st['pings']:,} pings; verify {ver['ok']}/{ver['picked']} acks "
            f"(p50 {ver['rtt_ms']['p50']} ms); VmRSS {before / 1024:.1f} -> {after / 1024:.1f} "
            f"MiB = {r.get('kib_per_socket')} KiB/socket"
        )
    finally:
        lg.close()
    r["background_busy_cores_before"] = background
    return r


# ------------------------------------------------------------------ report
COLS = (
    "server",
    "sockets joined",
    "connect s",
    "VmRSS before MiB",
    "VmRSS after MiB",
    "KiB per idle socket",
    "KiB/socket at hold end",
    "connected after hold",
    "room:join acks",
    "ack p50 / max ms",
    "server CPU idle (cores)",
    "ws extensions",
    "load avg before → after",
)


HIST_COLS = (
    "run (UTC)",
    "server",
    "sockets joined",
    "connects in flight",
    "connect s",
    "KiB per idle socket",
    "connected after hold",
    "room:join acks",
    "load avg before",
)


def history(outdir: Path) -> list[dict]:
    """Every recorded run in the results directory, oldest first: one row per server."""
    return [
        {
            "run": rep["started_at"],
            "inflight": rep["args"].get("connect_concurrency", 50) * rep["args"]["workers"],
            **r,
        }
        for rep, r in common.recorded_results(outdir, "idle")
    ]


def history_table(rows: list[dict]) -> list[str]:
    lines = common.table_head(HIST_COLS, left=2)
    for r in rows:
        lb = r.get("loadavg_before") or []
        lines.append(
            row(
                r["run"][:16].replace("T", " "),
                r["server"],
                f"{fmt(r['joined'])}/{fmt(r['clients'])}",
                fmt(r["inflight"]),
                fmt(r["connect_s"]),
                fmt(r.get("kib_per_socket")),
                fmt(r["connected_after_hold"]),
                f"{r['verify']['ok']}/{r['verify']['picked']}",
                fmt(lb[0]) if lb else "n/a",
            )
        )
    return lines


def render_md(report: dict, heading: str = "#") -> str:
    m, a = report["machine"], report["args"]
    lim = report["nofile"]
    software = (
        f"{common.packages_md(m['python_packages'])}; socket.io-client {m['socket.io-client']}, "
        f"socket.io {m['socket.io (node server)']} (node server)"
    )
    lines = [
        *common.md_head(heading, "Idle sockets benchmark", report),
        common.machine_md(m, software, f"; open files limit {lim[0]}/{lim[1]}"),
        "",
        f"Load: {a['clients']:,} socket.io-client connections to `/feed` (websocket only; "
        f"clients offer permessage-deflate: {a['client_deflate']}) from {a['workers']} Node "
        f"processes ({a.get('connect_concurrency', 50)} connects in flight per process), each "
        "joins `zone:idle`; VmRSS of the server process (/proc/<pid>/status) "
        "once settled before connecting, and once stable after (the last "
        f"{a['stable_window']} one-second samples within {a['stable_tol_kib']} KiB); then a "
        f"{a['hold']:g} s hold, a connection count and {a['verify']} `room:join` ack round trips "
        "spread over the sockets. KiB per idle socket = (after - before) / sockets joined.",
        "",
        *common.table_head(COLS),
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(common.error_row(COLS, (r["server"],), r["error"]))
            continue
        v = r["verify"]
        lb, la = r.get("loadavg_before") or [], r.get("loadavg_after") or []
        lines.append(
            row(
                r["server"],
                f"{fmt(r['joined'])}/{fmt(r['clients'])}",
                fmt(r["connect_s"]),
                fmt(r["rss_before_kib"] / 1024),
                fmt(r["rss_after_kib"] / 1024) + ("" if r["stable"] else " (not stable)"),
                fmt(r.get("kib_per_socket")),
                fmt(r.get("kib_per_socket_hold_end")),
                fmt(r["connected_after_hold"]),
                f"{v['ok']}/{v['picked']}",
                f"{fmt(v['rtt_ms']['p50'])} / {fmt(v['rtt_ms']['max'])}",
                fmt(r["server_cores_idle"], 3),
                r.get("ws_extensions") or "none",
                f"{lb[0] if lb else 'n/a'} → {la[0] if la else 'n/a'}",
            )
        )
    lines += ["", "Details:", ""]
    for r in report["results"]:
        if "error" in r:
            continue
        tree_note = (
            f"; server + embedded PostgreSQL summed VmRSS {fmt(r['tree_rss_before_kib'] / 1024)}"
            f" -> {fmt(r['tree_rss_after_kib'] / 1024)} MiB "
            f"({fmt(r.get('kib_per_socket_tree'))} KiB/socket)"
            if r["server"] == "ours"
            else ""
        )
        lines.append(
            f"- {r['server']}: VmRSS during the hold {fmt(r['rss_hold_min_kib'] / 1024)}-"
            f"{fmt(r['rss_hold_max_kib'] / 1024)} MiB{tree_note}; settled after "
            f"{r['stable_wait_s']} s; server CPU while connecting "
            f"{fmt(r.get('server_cpu_s_connect'), 2)} s "
            f"({fmt(r.get('server_cpu_ms_per_connect'), 2)} ms per socket); disconnects "
            f"{r['disconnects']}"
            f"{' ' + json.dumps(r['disconnect_reasons']) if r['disconnect_reasons'] else ''}; "
            f"Engine.IO pings received by the clients {fmt(r['pings_received'])}; connect errors "
            f"{json.dumps(r['connect_errors']) if r['connect_errors'] else 'none'}; busy cores "
            f"during the hold (whole machine) {fmt(r['machine_busy_cores_hold'], 2)}; other work "
            f"before {fmt(r.get('background_busy_cores_before'), 2)} busy cores; load generator "
            f"worker RSS {', '.join(str(x) for x in r['loadgen_worker_rss_mib'])} MiB."
        )
    hist = report.get("history") or []
    if len(hist) > len(report["results"]):
        lines += common.history_md(report["results_dir"], history_table(hist))
    lines += common.notes_md(report.get("notes") or [])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4, help="load generator processes")
    ap.add_argument(
        "--servers",
        default="ours,bare,bare-nodeflate,node",
        help=f"comma list of {','.join(KNOWN_SERVERS)}",
    )
    ap.add_argument("--hold", type=float, default=30, help="seconds to hold the idle sockets")
    ap.add_argument("--verify", type=int, default=100, help="room:join ack round trips")
    ap.add_argument("--connect-timeout", type=float, default=300)
    ap.add_argument(
        "--connect-concurrency",
        type=int,
        default=10,
        help="connects in flight per worker (with 50 x 4, some of 5,000 clients hit "
        "socket.io-client's 30 s connect timeout on ours)",
    )
    ap.add_argument("--stable-window", type=int, default=10, help="samples (1/s) in the window")
    ap.add_argument("--stable-tol-kib", type=int, default=1024, help="max spread in the window")
    ap.add_argument("--stable-max", type=float, default=120, help="max s to wait for stable")
    ap.add_argument("--client-deflate", choices=("on", "off"), default="on")
    common.add_quiet_args(ap)
    common.add_ours_args(ap, OURS_BENCH_ENV)
    ap.add_argument("--python", default=common.venv_python(), help="python for the bare server")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="also replace the results section of docs/benchmarks-idle.md",
    )
    args = ap.parse_args()
    common.new_credentials(args)
    servers = common.parse_servers(ap, args.servers, KNOWN_SERVERS)
    if "ours" in servers and not os.access(args.ours_bin, os.X_OK):
        ap.error(f"{args.ours_bin} not found (create the venv: see README.md)")
    if "node" in servers and not common.npm_version(FANOUT, "socket.io"):
        ap.error(
            "the node server needs bench/fanout's npm dependencies: (cd bench/fanout && npm ci)"
        )

    common.install_cleanup()
    nofile = raise_nofile()
    common.ensure_npm(HERE)
    started, outdir, logdir = common.begin_run("idle", args.out)
    machine = machine_info(args.python)
    log(
        f"{len(servers)} server(s), {args.clients:,} idle clients each; open files limit "
        f"{nofile[0]}/{nofile[1]}; load average {loadavg()}; server logs in {logdir}"
    )
    notes: list[str] = []
    if nofile[0] < args.clients + 1024:
        notes.append(f"open files limit {nofile[0]} is low for {args.clients} sockets")
    results: list[dict] = []
    for n, kind in enumerate(servers, 1):
        tag = f"[{n}/{len(servers)}] {kind}"
        results.append(
            common.measure_server(
                partial(Server, kind, args, logdir, "idle", OURS_BENCH_ENV),
                tag,
                partial(measure, args=args, tag=tag),
                {"server": kind},
            )
        )

    report = {
        **common.report_head("idle", started, args, machine),
        "nofile": list(nofile),
        "ours_env": {**OURS_BENCH_ENV, **common.env_pairs(args.ours_env)},
        "results": results,
        "notes": notes,
        "server_logs": str(logdir),
    }
    doc_title = DOC_TITLE if args.write_doc else None
    common.write_reports(outdir, "idle", started, report, render_md, history, doc_title)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
