"""Helpers shared by the benchmark runners (bench/*/run.py). Standard library only.

A runner puts bench/ on sys.path and imports this module:

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import common

then names its log prefix once with `common.set_log_name("fanout")`. Processes started with
`spawn` (each the leader of its own process group) and data dirs registered in `datadirs` are
stopped / removed by `cleanup`, which `install_cleanup` runs at exit and on SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
FANOUT = REPO / "bench" / "fanout"  # home of the baseline servers (bare_server.py, node_server.js)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

children: list[subprocess.Popen] = []  # process-group leaders we started
datadirs: list[str] = []  # temporary data dirs of running servers (removed by cleanup)

_log_name = "bench"


# ------------------------------------------------------------------ log
def set_log_name(name: str) -> None:
    """The prefix of every `log` line: `[<name> HH:MM:SS] ...`."""
    global _log_name
    _log_name = name


def log(msg: str) -> None:
    print(f"[{_log_name} {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ processes
def kill_group(p: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group of `p`, wait up to `grace` s, then SIGKILL what is left."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while other members of its group live on
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def pids_using(needle: str) -> set[int]:
    """pids whose command line mentions `needle` (e.g. our unique temporary data dir)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            out.add(int(d.name))
    return out


def kill_pids(pids: set[int]) -> None:
    """SIGTERM `pids`, wait up to 10 s for them to exit, SIGKILL the rest. Empties `pids`."""
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pids.discard(pid)
    deadline = time.time() + 10
    while pids and time.time() < deadline:
        for pid in list(pids):
            if not Path(f"/proc/{pid}").exists():
                pids.discard(pid)
        time.sleep(0.2)
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pids.discard(pid)


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    """Start `cmd` as the leader of a new process group, stopped by `cleanup`."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    children.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 15) -> None:
    kill_group(p, grace)
    if p in children:
        children.remove(p)


def release_datadir(datadir: str, label: str = "") -> None:
    """Stop anything still using a server's data dir (e.g. its PostgreSQL) and remove it.
    `label` goes before the log line about leftovers (e.g. "ours: ")."""
    leftovers = pids_using(datadir)
    if leftovers:
        log(f"{label}stopping {len(leftovers)} leftover process(es) using {datadir}")
        kill_pids(leftovers)
    shutil.rmtree(datadir, ignore_errors=True)
    if datadir in datadirs:
        datadirs.remove(datadir)


def cleanup() -> None:
    while children:
        kill_group(children.pop(), grace=5)
    for d in list(datadirs):
        release_datadir(d)


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping children")
    cleanup()
    sys.exit(128 + signum)


def install_cleanup() -> None:
    """Run `cleanup` at exit and on SIGTERM / SIGINT (then exit with 128 + the signal)."""
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


# ------------------------------------------------------------------ /proc sampling
def proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds, rss bytes) of one process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[21]) * PAGE


def tree(root: int, also: str | None = None) -> set[int]:
    """root, its descendants and processes whose command line mentions `also`."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = proc_stat(int(d.name))
            if st:
                kids.setdefault(st[0], []).append(int(d.name))
    seen: set[int] = set()
    stack = [root, *(pids_using(also) if also else ())]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(kids.get(pid, []))
    return seen


class Sampler(threading.Thread):
    """CPU seconds and RSS of a process tree (e.g. a server + its embedded PostgreSQL)."""

    def __init__(self, root: int, also: str | None) -> None:
        super().__init__(daemon=True)
        self.root, self.also = root, also
        self.pids: set[int] = set()
        self.cpu_seen: dict[int, float] = {}
        self.peak_rss = 0
        self._halt = threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> tuple[float, int]:
        with self.lock:
            self.pids |= tree(self.root, self.also)
            rss = 0
            for pid in list(self.pids):
                st = proc_stat(pid)
                if st is None:
                    continue  # exited: keep its last CPU figure
                self.cpu_seen[pid] = st[1]
                rss += st[2]
            self.peak_rss = max(self.peak_rss, rss)
            return sum(self.cpu_seen.values()), rss

    def run(self) -> None:
        while not self._halt.wait(0.5):
            self.sample()

    def halt(self) -> None:
        self._halt.set()


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    steal = f[7] if len(f) > 7 else 0
    return (sum(f[:8]) - idle - steal) / CLK_TCK


def busy_cores(seconds: float) -> float:
    m0, t0 = machine_busy(), time.time()
    time.sleep(seconds)
    return (machine_busy() - m0) / (time.time() - t0)


def wait_for_quiet(args, tag: str) -> float:
    """With the server up and idle, wait up to --quiet-wait s for the rest of the machine to
    drop under --quiet-cores busy cores. Returns the last reading."""
    deadline = time.time() + args.quiet_wait
    busy = busy_cores(2)
    while busy > args.quiet_cores and time.time() < deadline:
        log(f"{tag} | machine busy with other work ({busy:.2f} cores): waiting")
        busy = busy_cores(5)
    if busy > args.quiet_cores:
        log(f"{tag} | still {busy:.2f} busy cores of other work: running anyway")
    return round(busy, 2)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------ load generator
class Mark(NamedTuple):
    """What `run_loadgen` samples when the load generator enters a phase."""

    t: float  # wall clock, s
    server_cpu: float  # CPU seconds of the server's process tree
    server_rss: int  # bytes, the server's process tree
    loadgen_cpu: float  # CPU seconds of the load generator's processes
    machine_cpu: float  # busy CPU seconds of the whole machine (`machine_busy`)


def run_loadgen(
    script: Path,
    argv: list[str],
    *,
    env: dict[str, str],
    timeout: float,
    tag: str,
    server: Sampler,
    on_phase: Callable[[str], None] | None = None,
) -> tuple[dict, dict[str, Mark]]:
    """Run the Node load generator `script` (in its directory, `env` added to ours) to its end and
    read its JSON lines: log its progress as `  <tag> | <msg>`, take a `Mark` at each phase (then
    call `on_phase` with the phase), keep its result. Returns the result (without its "event" key)
    and the marks by phase. Kills it after `timeout` s; raises with the tail of its stderr when it
    gave no result."""
    p = spawn(
        ["node", str(script), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **env),
        cwd=script.parent,
    )
    loadgen = Sampler(p.pid, None)
    killer = threading.Timer(timeout, lambda: kill_group(p, 2))
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
                log(f"  {tag} | {ev['msg']}")
            elif kind == "phase":
                cpu, rss = server.sample()
                marks[ev["phase"]] = Mark(
                    time.time(), cpu, rss, loadgen.sample()[0], machine_busy()
                )
                if on_phase is not None:
                    on_phase(ev["phase"])
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
    result.pop("event", None)
    return result, marks


def cores_between(a: Mark, b: Mark) -> dict[str, float]:
    """Busy cores from mark `a` to mark `b`: the whole machine, the server, the load generator and
    everything else ("other": other work running at the same time skews results)."""
    wall = max(b.t - a.t, 1e-6)
    machine = b.machine_cpu - a.machine_cpu
    server = b.server_cpu - a.server_cpu
    loadgen = b.loadgen_cpu - a.loadgen_cpu
    return {
        "machine": round(machine / wall, 2),
        "server": round(server / wall, 2),
        "loadgen": round(loadgen / wall, 2),
        "other": round(max(0.0, machine - server - loadgen) / wall, 2),
    }


# ------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, name: str) -> None:
    """Poll `url`/health until it answers 200; raise if `proc` exits or `timeout` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} during startup")
        if http_ok(url + "/health"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{name} not healthy after {timeout}s")


def log_tail(logfile: Path, n: int = 30) -> str:
    try:
        return "\n".join(logfile.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def drop_redis_keys(python: str, url: str, prefix: str) -> None:
    """Delete the Redis keys starting with `prefix` (what a run left: streams, logs, limits)."""
    script = (
        "import sys, redis\n"
        "r = redis.Redis.from_url(sys.argv[1])\n"
        "for k in r.scan_iter(match=sys.argv[2] + '*', count=1000):\n"
        "    r.unlink(k)\n"
    )
    try:
        subprocess.run([python, "-c", script, url, prefix], timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"could not drop Redis keys {prefix}*: {e}")


OURS_KINDS = ("ours", "ours-redis")


def env_pairs(items: Sequence[str]) -> dict[str, str]:
    """{KEY: VALUE} of KEY=VALUE items (--ours-env)."""
    return dict(kv.split("=", 1) for kv in items)


class Server:
    """One server under test on a free 127.0.0.1 port, logging to <logdir>/<kind>-<port>.log.

    "ours" / "ours-redis": `args.ours_bin serve` with a fresh temporary OURS_DATA_DIR as its working
    directory (no developer's .env involved), the run's credentials, `bench_env` then --ours-env;
    "ours-redis" also on `args.redis_url` under a fresh key prefix (dropped by `stop`).
    "bare" / "bare-nodeflate" (refusing permessage-deflate): bench/fanout/bare_server.py under
    `args.python`; "node": bench/fanout/node_server.js.
    """

    def __init__(
        self,
        kind: str,
        args: argparse.Namespace,
        logdir: Path,
        bench: str,
        bench_env: dict[str, str],
    ) -> None:
        self.kind, self.args, self.bench, self.bench_env = kind, args, bench, bench_env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.datadir: str | None = None
        self.redis_prefix: str | None = None
        self.logfile = logdir / f"{kind}-{self.port}.log"

    def command(self) -> list[str]:
        host = ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.kind in OURS_KINDS:
            return [self.args.ours_bin, "serve", *host]
        if self.kind == "bare":
            return [self.args.python, str(FANOUT / "bare_server.py"), *host]
        if self.kind == "bare-nodeflate":
            return [self.args.python, str(FANOUT / "bare_server.py"), *host, "--no-ws-compress"]
        if self.kind == "node":
            return ["node", str(FANOUT / "node_server.js"), *host]
        raise ValueError(self.kind)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.kind in OURS_KINDS:
            assert self.datadir is not None
            env.update(
                OURS_DATA_DIR=self.datadir,
                OURS_JWT_SECRET=self.args.jwt_secret,
                OURS_API_KEYS=self.args.api_key,
            )
            # every client connects from 127.0.0.1: the bench lifts the per-IP / per-user rate
            # limits, it measures the server, not the limiter (overridable with --ours-env)
            env.update(self.bench_env)
            if self.kind == "ours-redis":  # Redis bus, room log and pub/sub; a fresh key prefix
                self.redis_prefix = "bench" + secrets.token_hex(4)
                env.update(OURS_REDIS_URL=self.args.redis_url, OURS_REDIS_PREFIX=self.redis_prefix)
            env.update(env_pairs(self.args.ours_env))
        return env

    def start(self) -> None:
        """Start the server and wait until /health answers (--ours-startup-timeout for ours, else
        30 s)."""
        if self.kind in OURS_KINDS:
            self.datadir = tempfile.mkdtemp(prefix=f"ours-bench-{self.bench}-")
            datadirs.append(self.datadir)
        with open(self.logfile, "ab") as fh:
            self.proc = spawn(
                self.command(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=self.datadir or FANOUT,
            )
        timeout = self.args.ours_startup_timeout if self.kind in OURS_KINDS else 30
        wait_healthy(self.proc, self.url, timeout, self.kind)

    def stop(self) -> None:
        """Stop the server, remove its data dir and drop its Redis keys."""
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


def measure_server(
    make: Callable[[], Server],
    tag: str,
    measure: Callable[[Server], dict],
    failed: dict,
    starting: str = "starting on",
) -> dict:
    """Start the server `make` gives, return what `measure` finds and stop the server. When anything
    fails: `failed` with the error and the tail of the server's log (both also logged)."""
    srv = None
    try:
        srv = make()
        log(f"{tag} | {starting} {srv.url}")
        t = time.time()
        srv.start()
        log(f"{tag} | healthy after {time.time() - t:.1f}s")
        return measure(srv)
    except Exception as e:
        log(f"{tag} | FAILED: {e}")
        entry = {**failed, "error": str(e)}
        if srv is not None:
            entry["server_log_tail"] = srv.log_tail()
            log(f"{srv.kind} log tail:\n{entry['server_log_tail']}")
        return entry
    finally:
        if srv is not None:
            srv.stop()


# ------------------------------------------------------------------ machine
def sh(cmd: list[str], **kw) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def venv_python() -> str:
    p = REPO / ".venv" / "bin" / "python"
    return str(p) if p.exists() else sys.executable


def npm_version(base: Path, name: str) -> str | None:
    pj = base / "node_modules" / name / "package.json"
    return json.loads(pj.read_text())["version"] if pj.exists() else None


def python_packages(py: str, packages: tuple[str, ...]) -> dict:
    """{'python': version, <package>: version or None} as seen by the interpreter `py`."""
    out = sh(
        [
            py,
            "-c",
            "import json,sys;from importlib import metadata as m\n"
            "d={'python':sys.version.split()[0]}\n"
            f"for n in {packages!r}:\n"
            "  try: d[n]=m.version(n)\n"
            "  except Exception: d[n]=None\n"
            "print(json.dumps(d))",
        ]
    )
    return json.loads(out) if out else {}


def machine_info(
    py: str | None = None, packages: tuple[str, ...] = (), extra: dict | None = None
) -> dict:
    """Machine details for a report: CPU, memory, OS, Node; with `py` the versions of
    `packages` in that Python; then `extra` (runner-specific), the git commit and whether
    server/ has uncommitted changes."""
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info: dict = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "node": sh(["node", "--version"]),
    }
    if py is not None:
        info["python_packages"] = python_packages(py, packages)
    info.update(extra or {})
    info["git_commit"] = sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or None
    info["git_dirty"] = bool(sh(["git", "-C", str(REPO), "status", "--porcelain", "--", "server"]))
    return info


def ensure_npm(
    here: Path, packages: tuple[str, ...] = ("socket.io-client",), ci: bool = True
) -> None:
    """Install a bench dir's npm dependencies unless `packages` are there already: `npm ci`
    (`npm install` without a package-lock.json, or with ci=False)."""
    if all((here / "node_modules" / n / "package.json").exists() for n in packages):
        return
    log(f"installing npm dependencies (npm {'ci' if ci else 'install'}) in bench/{here.name}")
    use_ci = ci and (here / "package-lock.json").exists()
    cmd = ["npm", "ci" if use_ci else "install", "--no-audit", "--no-fund"]
    subprocess.run(cmd, cwd=here, check=True, timeout=600)


# ------------------------------------------------------------------ command line
def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help starts with `doc` as written (the runner's docstring)."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_quiet_args(ap: argparse.ArgumentParser) -> None:
    """--quiet-wait and --quiet-cores, read by `wait_for_quiet`."""
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="max seconds to wait before each run for other work on the machine to stop",
    )
    ap.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="busy cores (outside the benchmark) under which the machine counts as quiet",
    )


def add_ours_args(ap: argparse.ArgumentParser, bench_env: dict[str, str]) -> None:
    """--ours-bin, --ours-env (on top of `bench_env`) and --ours-startup-timeout: how `Server`
    runs `ours serve`."""
    ap.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "ours"))
    ap.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `ours serve` (repeatable); defaults raise the rate limits: "
        + " ".join(f"{k}={v}" for k, v in bench_env.items()),
    )
    ap.add_argument("--ours-startup-timeout", type=float, default=120)


def comma_list(text: str) -> list[str]:
    """The non-empty items of a comma list, stripped."""
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_servers(ap: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """The servers of a --servers comma list; a usage error for one not in `known`."""
    servers = comma_list(text)
    for s in servers:
        if s not in known:
            ap.error(f"unknown server {s!r}")
    return servers


def new_credentials(args: argparse.Namespace) -> None:
    """Fresh args.api_key and args.jwt_secret, shared by the servers and the load generator."""
    args.api_key = "bench-" + secrets.token_hex(8)
    args.jwt_secret = secrets.token_hex(32)


# ------------------------------------------------------------------ report
HIDDEN_ARGS = ("api_key", "jwt_secret", "python", "out")  # not recorded in a report


def begin_run(name: str, out: str) -> tuple[datetime, Path, Path]:
    """A run's start time (UTC), its results directory `out` (created) and a new temporary
    directory for the server logs."""
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    return datetime.now(UTC), outdir, Path(tempfile.mkdtemp(prefix=f"bench-{name}-logs-"))


def utc_stamp(t: datetime) -> str:
    """The stamp in a report's file name: 20260101T120000Z."""
    return t.strftime("%Y%m%dT%H%M%SZ")


def repo_relative(path: Path) -> Path:
    """`path` relative to the repository when it lies inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def command_line(name: str) -> str:
    """The command that ran this runner, as a report shows it."""
    return f"bench/{name}/run " + " ".join(sys.argv[1:])


def report_head(
    name: str, started: datetime, args: argparse.Namespace, machine: dict
) -> dict[str, Any]:
    """The fields a JSON report starts with: the benchmark, when it ran, its command, its
    arguments (less `HIDDEN_ARGS`) and the machine."""
    return {
        "benchmark": f"bench/{name}",
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(name),
        "args": {k: v for k, v in vars(args).items() if k not in HIDDEN_ARGS},
        "machine": machine,
    }


def attach_history(report: dict, outdir: Path, history: Callable[[Path], list[dict]]) -> None:
    """Add what a markdown report lists of the runs recorded in `outdir`: report["history"]
    (rows from `history`) and report["results_dir"]."""
    report["history"] = history(outdir)
    report["results_dir"] = str(repo_relative(outdir))


def write_reports(
    outdir: Path,
    name: str,
    started: datetime,
    report: dict,
    render: Callable[..., str],
    history: Callable[[Path], list[dict]] | None = None,
    doc_title: str | None = None,
) -> None:
    """Write a run's reports: <outdir>/<name>-<UTC stamp>.json, then the markdown `render` makes
    of it (.md beside; with `history`, after `attach_history`), printed too; with `doc_title`, also
    the results section of docs/benchmarks-<name>.md (`render(report, heading="###")`)."""
    json_path = outdir / f"{name}-{utc_stamp(started)}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    if history is not None:
        attach_history(report, outdir, history)
    md = render(report)
    md_path = json_path.with_suffix(".md")
    md_path.write_text(md)
    print()
    print(md)
    log(f"wrote {repo_relative(json_path)} and {md_path.name}")
    if doc_title is not None:
        write_doc(name, render(report, heading="###"), doc_title)


def recorded_results(outdir: Path, name: str) -> Iterator[tuple[dict, dict]]:
    """(report, result) for each successful result of each report <name>-*.json in `outdir`,
    oldest first; unreadable reports are skipped."""
    for path in sorted(outdir.glob(f"{name}-*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for r in report.get("results", []):
            if "error" not in r:
                yield report, r


def write_doc(name: str, md: str, title: str, source: str = "") -> None:
    """Replace the results section of docs/benchmarks-<name>.md (between the markers naming
    `bench/<name>/run --write-doc`) with `md`; a missing doc starts as `title`, a doc without the
    section gets it under `## Results`. `source` ends the log line (e.g. " from X.json")."""
    doc = REPO / "docs" / f"benchmarks-{name}.md"
    begin = f"<!-- bench/{name} results: written by `bench/{name}/run --write-doc` -->"
    end = f"<!-- /bench/{name} results -->"
    block = f"{begin}\n\n{md}\n{end}"
    text = doc.read_text() if doc.exists() else title
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    doc.write_text(text)
    log(f"wrote the results section of {doc.relative_to(REPO)}{source}")


# ------------------------------------------------------------------ markdown
def fmt(x, nd: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_head(cols: Sequence[str], left: int = 1) -> list[str]:
    """A table's header and alignment rows: the first `left` columns left-aligned, the others
    right-aligned (numbers)."""
    return [row(*cols), row(*(["---"] * left + ["---:"] * (len(cols) - left)))]


def error_row(cols: Sequence[str], lead: Sequence[str], error: str, limit: int = 200) -> str:
    """A table row for a failed run: the `lead` cells, the error on one line (at most `limit`
    characters) and blank cells to the end."""
    err = error.replace("|", "/").replace("\n", " ")[:limit]
    return row(*lead, err, *([""] * (len(cols) - len(lead) - 1)))


def md_head(heading: str, title: str, report: dict) -> list[str]:
    """A report's first lines: `<heading> <title>, <started at>` and the command that ran it."""
    return [f"{heading} {title}, {report['started_at']}", "", f"Command: `{report['command']}`", ""]


def packages_md(packages: dict) -> str:
    """`Python <version>; <package> <version>, ...` of {"python": version, package: version}."""
    rest = ", ".join(f"{k} {v}" for k, v in packages.items() if k != "python")
    return f"Python {packages.get('python')}; {rest}"


def machine_md(m: dict, software: str, tail: str = "") -> str:
    """The report's "Machine:" sentence from `machine_info`: CPUs, memory, OS, Node, `software`,
    the git commit (and whether server/ had changes), then `tail`."""
    dirty = " (server/ dirty)" if m["git_dirty"] else ""
    return (
        f"Machine: {m['nproc']} vCPU {m['cpu_model']}, {m['mem_total_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}; Node {m['node']}, {software}; git {m['git_commit']}{dirty}{tail}."
    )


def history_md(results_dir: str, table: list[str]) -> list[str]:
    """The section listing every run recorded in `results_dir`, as the lines of `table`."""
    return ["", f"Every run recorded in `{results_dir}` (the one above included):", "", *table]


def notes_md(notes: Sequence[str]) -> list[str]:
    """The "Notes:" list ending a report (nothing without notes)."""
    return ["", "Notes:", ""] + [f"- {n}" for n in notes] if notes else []
