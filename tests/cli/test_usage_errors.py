"""Usage errors (issue 12, defect 3): an unknown command, an unknown option or a missing
argument prints Click's usage message (the usage, a `--help` hint, one error line) and exits
2, never a traceback, for every command group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from claude_conductor.cli import _common
from claude_conductor.cli.main import app

COMMANDS = [
    ("run",),
    ("demo",),
    ("up",),
    ("down",),
    ("stop",),
    ("status",),
    ("tasks", "list"),
    ("tasks", "show"),
    ("tasks", "logs"),
    ("tasks", "cancel"),
    ("tasks", "retry"),
    ("agents", "scale"),
    ("config", "show"),
    ("config", "validate"),
    ("config", "export"),
    ("config", "import"),
    ("dashboard",),
]


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], command: str) -> str:
    code = _common.invoke(app, argv)
    out = capsys.readouterr()
    assert code == 2, (argv, out)
    assert "Traceback" not in out.err
    assert out.out == ""
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert lines[0].startswith("Usage: conductor"), out.err
    assert any(
        f"Try 'conductor {command}".replace("  ", " ").rstrip() + " --help'" in line
        and "--help" in line
        for line in lines
    )
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, out.err
    return errors[0]


@pytest.mark.parametrize(
    "argv", [["bogus"], ["tasks", "bogus"], ["agents", "bogus"], ["config", "bogus"]]
)
def test_an_unknown_command(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    error = usage_error(capsys, argv, " ".join(argv[:-1]))
    assert f"No such command '{argv[-1]}'" in error


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unknown_option(capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    argv = [*command, "--bogus"]
    if command == ("agents", "scale"):  # it takes negative numbers, so options come after one
        argv = [*command, "2", "--bogus"]
    error = usage_error(capsys, argv, " ".join(command))
    assert "--bogus" in error, error


@pytest.mark.parametrize(
    ("command", "argument"),
    [
        (("tasks", "show"), "task_id"),
        (("tasks", "logs"), "task_id"),
        (("tasks", "cancel"), "task_id"),
        (("tasks", "retry"), "task_id"),
        (("agents", "scale"), "count"),
        (("config", "import"), "FILE"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_a_missing_argument(
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...], argument: str
) -> None:
    error = usage_error(capsys, list(command), " ".join(command))
    assert "Missing argument" in error and argument in error, error


def test_a_bad_option_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert "'--priority'" in usage_error(capsys, ["run", "--priority", "high"], "run")


def test_the_console_script_prints_usage_not_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "run", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines()[0].startswith("Usage: conductor run")
    assert "Error: No such option: --bogus" in out.stderr


def test_stop_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert _common.invoke(app, ["stop", "--help"]) == 0
    stop_help = capsys.readouterr().out
    assert _common.invoke(app, ["down", "--help"]) == 0
    down_help = capsys.readouterr().out
    options = lambda text: text[text.index("Options:") :]  # noqa: E731
    assert "conductor down" in stop_help
    assert options(stop_help) == options(down_help)
