"""bench/liveroom runner: one live room, V viewers, chat messages and reactions.

Starts `ours serve` on a free 127.0.0.1 port (fresh temporary OURS_DATA_DIR: embedded
PostgreSQL; with --redis, Redis for the bus, fan-out, the chat gate and reaction bursts), with the
per-user / per-IP / connect rate limits raised (every viewer comes from 127.0.0.1), announces the
live with `POST /v1/events` (live.started), runs the Node load generator (loadgen.js), stops the
server and writes results/liveroom-<UTC stamp>.{json,md}. Standard library only; bounded in time
(connect <= 120 s, send = --duration, drain <= --drain-max, a hard kill after that).

    bench/liveroom/run --viewers 2000 --chat-rate 50 --reaction-rate 500 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
from common import (  # noqa: E402
    drop_redis_keys,
    ensure_npm,
    free_port,
    http_ok,
    kill_group,
    log,
    machine_busy,
    npm_version,
    pids_using,
    proc_stat,
    release_datadir,
    venv_python,
)

common.set_log_name("liveroom")

RAISED = "1000000"  # the rate-limit settings' maximum


def machine() -> dict:
    info = common.machine_info(
        extra={
            "python": platform.python_version(),
            "socket.io-client": npm_version(HERE, "socket.io-client"),
        }
    )
    info["load_before"] = os.getloadavg()
    return info


# ------------------------------------------------------------------ processes
class Sampler(threading.Thread):
    """CPU seconds and RSS of the server process (+ its embedded PostgreSQL)."""

    def __init__(self, root: int, also: str) -> None:
        super().__init__(daemon=True)
        self.root, self.also = root, also
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.halt = threading.Event()

    def sample(self) -> float:
        pids = {self.root} | pids_using(self.also)
        rss = 0
        for pid in pids:
            st = proc_stat(pid)
            if st:
                self.cpu[pid] = st[1]
                rss += st[2]
        self.peak_rss = max(self.peak_rss, rss)
        return sum(self.cpu.values())

    def run(self) -> None:
        while not self.halt.wait(1):
            self.sample()


# ------------------------------------------------------------------ run
def start_server(args, datadir: str, logfile: Path) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OURS_")}
    env.update(
        OURS_DATA_DIR=datadir,
        OURS_JWT_SECRET=args.jwt_secret,
        OURS_API_KEYS=args.api_key,
        OURS_RATE_USER_PER_MIN=RAISED,
        OURS_RATE_IP_PER_MIN=RAISED,
        OURS_RATE_CONNECT_PER_MIN=RAISED,
        OURS_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if args.redis:
        env.update(OURS_REDIS_URL=args.redis, OURS_REDIS_PREFIX=args.redis_prefix)
    # this tree's code (PYTHONPATH first), whichever checkout the venv's editable install names
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(logfile, "ab") as fh:
        p = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if p.poll() is not None:
            tail = logfile.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"ours exited with {p.returncode}:\n{tail}")
        if http_ok(url + "/health"):
            return p, url, {"cmd": " ".join(cmd), "redis": bool(args.redis)}
        time.sleep(0.3)
    raise RuntimeError("ours did not become healthy in 90 s")


def announce(url: str, args) -> None:
    body = json.dumps(
        {
            "type": "live.started",
            "subjects": [f"live:{args.live}"],
            "payload": {"live_id": args.live, "host_id": "bench-host", "title": "bench"},
        }
    ).encode()
    req = urllib.request.Request(
        url + "/v1/events",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {args.api_key}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 202):
            raise RuntimeError(f"live.started answered {r.status}")


def start_profiler(args, pid: int) -> subprocess.Popen | None:
    """py-spy (next to this Python) on the server for the send window: a flame graph (.svg) or
    collapsed stacks (any other suffix) at --profile."""
    if not args.profile:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    fmt = "flamegraph" if args.profile.endswith(".svg") else "raw"
    cmd = [str(spy if spy.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", "100"]
    cmd += ["--format", fmt, "-o", args.profile, "--duration", str(int(args.duration) + 2)]
    log(f"profiling the server: {' '.join(cmd)}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def run_loadgen(url: str, args, sampler: Sampler, server_pid: int) -> dict:
    cmd = [
        "node", str(HERE / "loadgen.js"), "--url", url, "--live", args.live,
        "--viewers", str(args.viewers), "--workers", str(args.workers),
        "--senders", str(args.senders), "--chat-rate", str(args.chat_rate),
        "--reaction-rate", str(args.reaction_rate), "--duration", str(args.duration),
        "--drain-max", str(args.drain_max),
    ]  # fmt: skip
    env = dict(os.environ, BENCH_JWT_SECRET=args.jwt_secret)
    hard = 120 + 30 + args.duration + 30 + args.drain_max + 60
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE, start_new_session=True
    )
    killer = threading.Timer(hard, lambda: kill_group(p, 2))
    killer.start()
    result, error, marks = None, None, {}
    profiler: subprocess.Popen | None = None
    try:
        assert p.stdout is not None
        for line in p.stdout:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                log(f"  loadgen: {line.rstrip()}")
                continue
            if ev.get("event") == "progress":
                log(f"  {ev['msg']}")
            elif ev.get("event") == "phase":
                marks[ev["phase"]] = (time.time(), sampler.sample(), machine_busy())
                if ev["phase"] == "publish_start":
                    profiler = start_profiler(args, server_pid)
            elif ev.get("event") == "result":
                result = ev
            elif ev.get("event") == "error":
                error = ev.get("error")
        p.wait(timeout=30)
    finally:
        killer.cancel()
        kill_group(p, 2)
        if profiler is not None:
            try:
                profiler.wait(timeout=args.duration + 30)
            except subprocess.TimeoutExpired:
                profiler.kill()
    if result is None:
        raise RuntimeError(f"loadgen failed: {error or 'no result'}")
    if "publish_start" in marks and "drain_end" in marks:
        (t0, c0, m0), (t1, c1, m1) = marks["publish_start"], marks["drain_end"]
        wall = max(t1 - t0, 1e-6)
        result["server_cpu_cores"] = round((c1 - c0) / wall, 2)
        result["machine_busy_cores"] = round((m1 - m0) / wall, 2)
    result["server_rss_mib_peak"] = round(sampler.peak_rss / 2**20, 1)
    return result


def server_errors(logfile: Path) -> dict:
    """Error lines of the server log by message, and where the first one came from."""
    counts: dict[str, int] = {}
    first = None
    try:
        lines = logfile.read_text(errors="replace").splitlines()
    except OSError:
        return {"count": 0, "by_message": {}, "first": None}
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("level") in ("error", "critical"):
            counts[rec.get("msg", "?")] = counts.get(rec.get("msg", "?"), 0) + 1
            if first is None:
                exc = str(rec.get("exc", ""))
                ours = [
                    ln.strip()
                    for ln in exc.splitlines()
                    if ln.strip().startswith(f'File "{REPO}') and "/.venv/" not in ln
                ]
                first = {"msg": rec.get("msg"), "where": ours[-3:], "exc_tail": exc[-600:]}
    return {"count": sum(counts.values()), "by_message": counts, "first": first}


def checks(r: dict) -> dict[str, bool]:
    """Nothing lost: every send accepted, every viewer got every accepted chat message once
    and counted every accepted reaction, and none was disconnected."""
    c, x = r["chat"], r["reactions"]
    return {
        "every chat:send accepted": c["accepted"] == c["sent"] > 0,
        "every viewer got every accepted message": c["lost"] == 0
        and c["received_per_viewer_min"] == c["accepted"],
        "no message delivered twice": c["duplicates"] == 0 and c["bad_bodies"] == 0,
        "every reaction:send accepted": x["accepted"] == x["sent"],
        "every viewer counted every accepted reaction": x["counted_per_viewer_min"]
        == x["accepted"],
        "every viewer stayed connected": r["disconnects"] == 0
        and r["viewers_joined_at_end"] == r["viewers_joined"] == r["viewers"],
    }


def render_md(report: dict) -> str:
    m, r, a = report["machine"], report["result"], report["args"]
    c, x = r["chat"], r["reactions"]
    lat, ack = c["latency_ms"], c["ack_ms"]
    load = ", ".join(f"{v:.2f}" for v in m["load_before"])
    return "\n".join(
        [
            *common.md_head("#", "Live room benchmark", report),
            common.machine_md(
                m,
                f"Python {m['python']}, socket.io-client {m['socket.io-client']}",
                f"; load average before {load}",
            ),
            "",
            f"Server: `ours serve`, one process, {'Redis' if a['redis'] else 'embedded'} "
            "backends, rate limits raised to 1,000,000/min per user, per IP and for connects.",
            "",
            f"Load: {r['viewers_joined']:,}/{r['viewers']:,} viewers joined `live:{r['live']}` "
            f"(websocket, {r['workers']} worker processes, connected in {r['connect_s']} s); for "
            f"{r['duration_s']} s, {a['chat_rate']} chat messages/s from {a['senders']} senders "
            f"and {a['reaction_rate']} reactions/s, open loop; latency = viewer receive time - "
            "scheduled send time (same clock).",
            "",
            "| chat | value |",
            "| --- | ---: |",
            f"| messages sent / accepted | {c['sent']:,} / {c['accepted']:,} |",
            f"| send errors | {json.dumps(c['errors']) if c['errors'] else 'none'} |",
            f"| expected deliveries (accepted x viewers) | {c['expected']:,} |",
            f"| delivered / lost | {c['delivered']:,} / {c['lost']:,} ({c['loss_pct']} %) |",
            f"| deliveries of sends whose ack timed out (not counted above) | "
            f"{c['delivered_of_unacked_sends']:,} |",
            f"| offered deliveries/s | {c['offered_per_s']:,} |",
            f"| delivered messages/s (send window) | {c['window_delivered_per_s']:,} |",
            f"| delivered messages/s (to the last) | {c['delivered_per_s']:,} |",
            f"| latency p50 / p90 / p99 / max ms | {lat['p50']} / {lat['p90']} / {lat['p99']} / "
            f"{lat['max']} |",
            f"| chat:send ack p50 / p99 ms | {ack['p50']} / {ack['p99']} |",
            f"| drain after sending stopped, s | {c['drain_s']} |",
            "",
            "| reactions | value |",
            "| --- | ---: |",
            f"| sent / accepted | {x['sent']:,} / {x['accepted']:,} |",
            f"| errors | {json.dumps(x['errors']) if x['errors'] else 'none'} |",
            f"| reaction:burst frames per viewer (per s) | {x['burst_frames_per_viewer']} "
            f"({x['burst_frames_per_viewer_per_s']}) |",
            f"| most bursts one viewer got in one second | {x['max_bursts_one_viewer_one_s']} |",
            f"| reactions per frame | {x['reactions_per_frame']} |",
            f"| reactions counted per viewer, mean / min | {x['counted_per_viewer_mean']} / "
            f"{x['counted_per_viewer_min']} |",
            "",
            "| check (nothing lost) | |",
            "| --- | --- |",
            *(f"| {k} | {'pass' if ok else '**FAIL**'} |" for k, ok in report["checks"].items()),
            "",
            f"Server CPU {r.get('server_cpu_cores')} cores (machine busy "
            f"{r.get('machine_busy_cores')} cores, load generator included), peak RSS "
            f"{r.get('server_rss_mib_peak')} MiB; disconnects {r['disconnects']}; server log "
            f"errors: {report['server_errors']['count']}"
            + (
                f" ({json.dumps(report['server_errors']['by_message'])}; first: "
                f"`{report['server_errors']['first']['exc_tail'].splitlines()[-1][:200]}`)"
                if report["server_errors"]["first"] and report["server_errors"]["first"]["exc_tail"]
                else ""
            )
            + ".",
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--viewers", type=int, default=2000)
    ap.add_argument("--chat-rate", type=float, default=50)
    ap.add_argument("--reaction-rate", type=float, default=500)
    ap.add_argument("--senders", type=int, default=100)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--drain-max", type=float, default=20)
    ap.add_argument("--live", default="bench")
    ap.add_argument("--redis", default=None, help="Redis URL: run the server on Redis backends")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument(
        "--profile",
        default=None,
        help="write a py-spy profile of the server's send window here (.svg: flame graph; "
        "otherwise collapsed stacks); py-spy perturbs the timings: not for measured runs",
    )
    args = ap.parse_args()
    args.jwt_secret = secrets.token_hex(24)
    args.api_key = "bench_" + secrets.token_hex(12)
    args.redis_prefix = f"benchlr{secrets.token_hex(4)}"
    ensure_npm(HERE, ci=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    info = machine()
    datadir = tempfile.mkdtemp(prefix="ours-bench-liveroom-")
    server = None
    try:
        server, url, sinfo = start_server(args, datadir, Path(datadir) / "server.log")
        log(f"server up at {url} ({'redis' if args.redis else 'embedded'})")
        announce(url, args)
        sampler = Sampler(server.pid, datadir)
        sampler.start()
        result = run_loadgen(url, args, sampler, server.pid)
        sampler.halt.set()
    finally:
        if server is not None:
            kill_group(server, 15)
        errors = server_errors(Path(datadir) / "server.log")
        release_datadir(datadir)
        if args.redis:  # the run's keys (bus stream, room logs, chat state) go with it
            drop_redis_keys(venv_python(), args.redis, args.redis_prefix + ":")
    report = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": common.command_line("liveroom"),
        "machine": info,
        "server": sinfo,
        "args": {
            k: v
            for k, v in vars(args).items()
            if k not in ("jwt_secret", "api_key", "redis_prefix")
        },
        "result": result,
        "server_errors": errors,
        "checks": checks(result),
    }
    common.write_reports(out, "liveroom", started, report, render_md)
    failed = [name for name, ok in report["checks"].items() if not ok]
    c = result["chat"]
    log(
        f"chat p99 {c['latency_ms']['p99']} ms, delivered {c['window_delivered_per_s']:,}/s "
        f"(send window); checks: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
