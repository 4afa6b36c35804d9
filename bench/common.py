"""Helpers shared by the benchmark runners (bench/*/run.py). Standard library only.

A runner puts bench/ on sys.path and imports this module:

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import common

then names its log prefix once with `common.set_log_name("fanout")`. Processes started with
`spawn` (each the leader of its own process group) and data dirs registered in `datadirs` are
stopped / removed by `cleanup`, which `install_cleanup` runs at exit and on SIGINT / SIGTERM.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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


# ------------------------------------------------------------------ report
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


def write_doc(doc: Path, begin: str, end: str, md: str, title: str) -> None:
    """Replace the generated results section (between `begin` and `end`) of `doc`; a missing
    doc starts as `title`, a doc without the section gets it under `## Results`."""
    block = f"{begin}\n\n{md}\n{end}"
    text = doc.read_text() if doc.exists() else title
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    doc.write_text(text)
