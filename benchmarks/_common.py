"""Helpers shared by the standalone benchmarks: bytecode, ports, statistics, process memory,
the machine's description, a tiny git repository. Linux only (``/proc``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Where ``--pyc`` keeps compiled bytecode (the virtualenv has none, and the environment may
#: set PYTHONDONTWRITEBYTECODE, so every new Python process would compile what it imports).
PYC_PREFIX = Path(tempfile.gettempdir()) / "conductor-bench-pyc"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_env(pyc: bool) -> dict[str, str]:
    """This process's environment, with a private bytecode cache when ``pyc``."""
    env = dict(os.environ)
    if pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYC_PREFIX)
    return env


def compile_bytecode(env: dict[str, str]) -> float:
    """Fill the private cache for the standard library, the virtualenv and ``src/`` with
    ``python -m compileall`` (up-to-date files are skipped); returns the seconds it took.
    Compile errors (test data written in Python 2 in some packages) are ignored."""
    paths = sysconfig.get_paths()
    dirs = sorted({paths["stdlib"], paths["purelib"], paths["platlib"], str(ROOT / "src")})
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", r"/(tests?|test_\w+)/", *dirs],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return round(time.monotonic() - began, 1)


def summary(values: Sequence[float], digits: int = 2) -> dict[str, Any]:
    """min / median / max (and every value) of a series."""
    if not values:
        return {"n": 0, "min": None, "median": None, "p95": None, "max": None, "values": []}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "p95": round(p95, digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def http_ok(url: str, timeout_seconds: float = 2.0) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=timeout_seconds) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http(url: str, timeout_seconds: float, interval_seconds: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if http_ok(url, timeout_seconds=1.0):
            return True
        time.sleep(interval_seconds)
    return False


# -- processes and memory -------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap our own exited children
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")  # type: ignore[index]


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and all their living descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [p for p in roots if alive(p)]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return sorted(out)


def process_memory(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages split between their sharers) and USS (pages of this process
    alone: what ending it frees) in MiB, from psutil's ``memory_full_info``; zeros when the
    process is gone or may not be read."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return {"rss_mib": 0.0, "pss_mib": 0.0, "uss_mib": 0.0}
    return {
        "rss_mib": round(info.rss / 2**20, 1),
        "pss_mib": round(getattr(info, "pss", 0) / 2**20, 1),
        "uss_mib": round(info.uss / 2**20, 1),
    }


def process_name(pid: int) -> str:
    """The kernel's name of ``pid`` (``comm``: the forkserver's roles set theirs)."""
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def _label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode("utf-8", "replace") for a in argv if a]
    if words and "python" in Path(words[0]).name:
        words = words[1:]
    if words[:1] == ["-m"]:
        words = words[1:]
    return " ".join(w for w in words[:4] if not w.startswith("/"))[:60] or "?"


def memory(roots: Mapping[str, int]) -> dict[str, Any]:
    """RSS, PSS and USS summed over the process trees of ``roots`` (name -> PID), in MiB: the
    total, each tree, and each process (with its kernel name: ``forkserver`` ...)."""
    procs = []
    by_root: dict[str, dict[str, float]] = {}
    keys = ("rss_mib", "pss_mib", "uss_mib")
    for name, root in sorted(roots.items()):
        tree = {"rss_mib": 0.0, "pss_mib": 0.0, "uss_mib": 0.0, "processes": 0}
        for pid in process_tree([root]):
            figures = process_memory(pid)
            procs.append({"root": name, "pid": pid, "name": process_name(pid),
                          "what": _label(pid), **figures})  # fmt: skip
            for key in keys:
                tree[key] += figures[key]
            tree["processes"] += 1
        by_root[name] = {k: round(v, 1) for k, v in tree.items()}
    return {
        **{key: round(sum(p[key] for p in procs), 1) for key in keys},
        "by_root": by_root,
        "processes": procs,
    }


def stop_pids(pids: Sequence[int], grace_seconds: float = 10.0) -> None:
    """Stop processes this harness started (each leads its own session): SIGTERM to the group,
    SIGTERM again after a second (an idle ``prefect worker start`` may ignore the first),
    SIGKILL after ``grace_seconds``."""

    def group_alive(pid: int) -> bool:
        if alive(pid):
            return True
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def signal_all(sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while any(group_alive(p) for p in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    signal_all(signal.SIGTERM)
    if wait(1.0):
        return
    signal_all(signal.SIGTERM)
    if wait(grace_seconds - 1.0):
        return
    signal_all(signal.SIGKILL)
    wait(5.0)


# -- the machine -----------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "?"


def machine() -> dict[str, Any]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "ram_gib": round(int(mem_kib) / 1024**2, 1) if mem_kib.isdigit() else None,
        "os": _first("/etc/os-release", "PRETTY_NAME=").strip('"'),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "prefect": version("prefect"),
        "claude_conductor": version("claude-conductor"),
        "git_commit": commit + (" (src/ modified)" if dirty else ""),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- a repository for command tasks ------------------------------------------------------------


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=B", "-c", "user.email=b@example.com"]
    git += ["-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("bench\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    return repo


def read_mark(path: Path) -> float | None:
    """The first timestamp (seconds since the epoch) a run wrote to ``path``."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def print_report(report: Mapping[str, Any], out: Path | None) -> None:
    """Print a benchmark's JSON report; with ``out``, also write it there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
