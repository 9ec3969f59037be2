"""Daemon management by PID file, with real processes (tiny Python scripts)."""

from __future__ import annotations

import http.server
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes

STUBBORN = """
import signal, time, os
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.environ["READY"], "w").close()
while True:
    time.sleep(0.1)
"""
PLAIN = "import time\nwhile True: time.sleep(0.1)\n"
WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.1)"])
print(child.pid, flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def settings(tmp_path: Path) -> ConductorSettings:
    return ConductorSettings(home=tmp_path / "home")


@pytest.fixture
def cleanup(settings: ConductorSettings) -> Iterator[None]:
    yield
    for name in processes.pid_file_names(settings):
        processes.stop_daemon(settings, name, grace_seconds=1)


def _wait_for(path: Path, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _child_pid(log: Path, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while True:
        lines = log.read_text().split()
        if lines and lines[-1].isdigit():
            return int(lines[-1])
        assert time.monotonic() < deadline, "the daemon never printed its child's pid"
        time.sleep(0.05)


def test_start_records_pid_and_start_time_and_stop_removes_it(
    settings: ConductorSettings, cleanup: None
) -> None:
    daemon = processes.start_daemon(
        settings, "plain", [sys.executable, "-c", PLAIN], env=dict(os.environ)
    )
    assert processes.is_running(settings, "plain")
    recorded = processes.read_daemon(settings, "plain")
    assert recorded is not None and recorded.pid == daemon.pid
    assert recorded.start_ticks == processes.process_start_ticks(daemon.pid)
    assert os.getpgid(daemon.pid) == daemon.pid  # its own session and group
    assert daemon.log_path == settings.logs_dir / "plain.log"

    stopped = processes.stop_daemon(settings, "plain", grace_seconds=5)
    assert stopped is not None and stopped.pid == daemon.pid
    assert not processes.pid_alive(daemon.pid)
    assert not (settings.run_dir / "plain.pid").exists()
    assert processes.stop_daemon(settings, "plain") is None


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace(
    settings: ConductorSettings, tmp_path: Path, cleanup: None
) -> None:
    ready = tmp_path / "ready"
    daemon = processes.start_daemon(
        settings,
        "stubborn",
        [sys.executable, "-c", STUBBORN],
        env={**os.environ, "READY": str(ready)},
    )
    _wait_for(ready)
    began = time.monotonic()
    assert processes.stop_daemon(settings, "stubborn", grace_seconds=1.5) is not None
    took = time.monotonic() - began
    assert not processes.pid_alive(daemon.pid)
    assert 1.4 < took < 8


def test_stop_takes_the_whole_process_group(settings: ConductorSettings, cleanup: None) -> None:
    daemon = processes.start_daemon(
        settings, "parent", [sys.executable, "-c", WITH_CHILD], env=dict(os.environ)
    )
    child = _child_pid(daemon.log_path)
    assert processes.pid_alive(child)
    processes.stop_daemon(settings, "parent", grace_seconds=3)
    assert not processes.pid_alive(child)


def test_a_recycled_pid_is_not_ours(settings: ConductorSettings, cleanup: None) -> None:
    daemon = processes.start_daemon(
        settings, "plain", [sys.executable, "-c", PLAIN], env=dict(os.environ)
    )
    pid_file = settings.run_dir / "plain.pid"
    wrong = daemon.model_copy(update={"start_ticks": daemon.start_ticks + 12345})
    pid_file.write_text(wrong.model_dump_json())
    assert not processes.is_running(settings, "plain")
    assert processes.stop_daemon(settings, "plain", grace_seconds=1) is None
    assert processes.pid_alive(daemon.pid), "a process that only shares the PID was signalled"
    assert not pid_file.exists()
    processes.terminate_processes([(daemon.pid, daemon.start_ticks)], grace_seconds=2)
    assert not processes.pid_alive(daemon.pid)


def test_start_refuses_a_second_copy(settings: ConductorSettings, cleanup: None) -> None:
    processes.start_daemon(settings, "plain", [sys.executable, "-c", PLAIN], env=dict(os.environ))
    with pytest.raises(processes.DaemonError, match="already running"):
        processes.start_daemon(
            settings, "plain", [sys.executable, "-c", PLAIN], env=dict(os.environ)
        )


def test_find_processes_with_env_and_read_environ(
    settings: ConductorSettings, cleanup: None
) -> None:
    marker = f"marker-{os.getpid()}-{time.monotonic_ns()}"
    daemon = processes.start_daemon(
        settings,
        "marked",
        [sys.executable, "-c", PLAIN],
        env={**os.environ, "CONDUCTOR_STACK": marker},
    )
    # Right after exec the kernel may not have published the new environment yet.
    deadline = time.monotonic() + 5
    while not processes.read_environ(daemon.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes.find_processes_with_env("CONDUCTOR_STACK", marker) == [daemon.pid]
    assert processes.read_environ(daemon.pid)["CONDUCTOR_STACK"] == marker
    assert processes.find_processes_with_env("CONDUCTOR_STACK", marker + "x") == []


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wait_for_health(health_server: str) -> None:
    assert processes.wait_for_health(f"{health_server}/ok", 5)
    began = time.monotonic()
    assert not processes.wait_for_health(f"{health_server}/bad", 0.6)
    assert time.monotonic() - began < 3
    began = time.monotonic()
    assert not processes.wait_for_health(f"{health_server}/bad", 30, alive=lambda: False)
    assert time.monotonic() - began < 3


def test_log_tail_reports_the_end_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert processes.log_tail(log, 2) == "line 98\nline 99"
    assert processes.log_tail(tmp_path / "missing.log") == ""


def test_start_ticks_match_the_kernels_proc_stat(
    settings: ConductorSettings, cleanup: None
) -> None:
    """The start time is /proc/<pid>/stat field 22, psutil's create_time in clock ticks (PID
    files written by earlier versions, which used psutil, still match)."""
    daemon = processes.start_daemon(
        settings, "ticks", [sys.executable, "-c", PLAIN], env=dict(os.environ)
    )
    raw = Path(f"/proc/{daemon.pid}/stat").read_text()
    assert processes.process_start_ticks(daemon.pid) == int(raw[raw.rfind(")") + 2 :].split()[19])
    processes.terminate_processes([(daemon.pid, daemon.start_ticks)], grace_seconds=2)
    assert processes.process_start_ticks(daemon.pid) is None


def test_liveness_reads_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    """The command name in /proc/<pid>/stat is free text: ``x) y (z`` does not shift the
    fields; a zombie (exited, not reaped) is not live; a reaped one is gone."""
    import shutil
    import subprocess

    import psutil

    odd = tmp_path / "x) y (z"
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        created = psutil.Process(proc.pid).create_time() - psutil.boot_time()
        assert processes.process_start_ticks(proc.pid) == round(created * os.sysconf("SC_CLK_TCK"))
        assert processes.is_live(proc.pid)
        proc.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not processes.is_live(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert processes.process_start_ticks(proc.pid) is None
