"""Bad input through `conductor run` (issue 12, defect 2): each case exits 2 with one line that
names the field, in bounded time and memory, and creates nothing (no worktree, no branch, no
Conductor home). The CLI runs as a subprocess, as a user runs it."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import git

_MEMORY_CAP_BYTES = 1024 * 1024 * 1024
"""Address-space cap for the CLI under test: a bomb that expands dies here instead of
taking the machine (the fix keeps a bad file far below it)."""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "main.py").write_text("print('hi')\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP_BYTES, _MEMORY_CAP_BYTES))


def conductor(
    tmp_path: Path, repo: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CONDUCTOR_HOME": str(home),
        # Nothing may reach a server or a model: these point nowhere.
        "CONDUCTOR_API_URL": "http://127.0.0.1:9/api",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        preexec_fn=_limit_memory,
    )


def assert_rejected(
    proc: subprocess.CompletedProcess[str], repo: Path, tmp_path: Path, *parts: str
) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert len(err.splitlines()) == 1, err[-2000:]
    assert len(err) < 600, f"error line of {len(err)} characters: {err[:300]}..."
    for part in parts:
        assert part in err, err
    branches = git(repo, "branch", "--list", "conductor/*").strip()
    assert branches == "", branches
    worktrees = git(repo, "worktree", "list", "--porcelain").count("worktree ")
    assert worktrees == 1
    assert not (tmp_path / "home" / "worktrees").exists()
    return err


def write(tmp_path: Path, body: str | bytes) -> Path:
    path = tmp_path / "task.yaml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


def test_nul_byte_in_the_prompt_flag(tmp_path: Path, repo: Path) -> None:
    # A NUL in an argv string cannot be passed by subprocess; task files and --prompt via
    # YAML escapes can carry one, so the flag path is checked through a file's escape too.
    path = write(tmp_path, 'prompt: "add greet()\\0 and more"\n')
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "'prompt'",
        "NUL",
    )


def test_raw_nul_byte_in_a_task_file_names_line_and_column(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, b"kind: generic\nprompt: ab\x00c\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "line 2, column 11",
        "#x0000",
    )


def test_nul_byte_in_files_and_ref(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, 'prompt: x\nref: "main\\0"\n')
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)), repo, tmp_path, "'ref'", "NUL"
    )


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
        for i in range(9)
    ]
    + ["prompt: *j"]
)


@pytest.mark.parametrize(
    ("name", "body", "parts"),
    [
        ("anchor bomb", BILLION_LAUGHS, ["expands to more than", "aliases"]),
        ("20,000 nested [", "prompt: " + "[" * 20000 + "]" * 20000 + "\n", ["levels deep"]),
        (
            "1,500 nested mappings",
            "prompt: x\ntags: " + "{k: " * 1500 + "1" + "}" * 1500 + "\n",
            ["levels deep"],
        ),
        ("self-referencing alias", "prompt: &a [*a]\n", ["refers to itself"]),
    ],
)
def test_yaml_bombs_fail_fast_and_small(
    tmp_path: Path, repo: Path, name: str, body: str, parts: list[str]
) -> None:
    path = write(tmp_path, body)
    started = time.monotonic()
    proc = conductor(tmp_path, repo, "run", "--local", str(path))
    assert_rejected(proc, repo, tmp_path, "YAML", *parts)
    # Not a timing assertion: a hang would hit the subprocess timeout; this only names it.
    assert time.monotonic() - started < 60, name


def test_a_huge_task_file_is_refused_before_parsing(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, "prompt: '" + "x" * (2 * 1024 * 1024) + "'\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "larger than the limit",
        "KiB",
    )


@pytest.mark.parametrize(
    "target", ["../../etc/passwd", "/etc/passwd", "src/../../outside.py", "", "  "]
)
def test_files_outside_the_repository(tmp_path: Path, repo: Path, target: str) -> None:
    path = write(tmp_path, f"prompt: review\nrepo: project\nfiles: [{target!r}]\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "'files'",
        "outside the repository",
        "relative to the repository root",
    )


def test_an_absolute_path_inside_the_repository_is_made_relative(
    tmp_path: Path, repo: Path
) -> None:
    from claude_conductor.taskfile import load_task_file

    path = write(tmp_path, f"prompt: review\nrepo: project\nfiles: [{repo / 'main.py'}, ./a/b]\n")
    assert load_task_file(path).files == ["main.py", "a/b"]


def test_a_prompt_over_the_limit(tmp_path: Path, repo: Path) -> None:
    from claude_conductor.models import MAX_PROMPT_BYTES

    path = write(tmp_path, "prompt: " + "x" * (MAX_PROMPT_BYTES + 1) + "\n")
    err = assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "'prompt'",
        f"limit of {MAX_PROMPT_BYTES} bytes",
    )
    assert "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" not in err


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("retries: true", "'retries'"),
        ("max_turns: yes", "'max_turns'"),
        ("priority: '5'", "'priority'"),
        ("timeout_seconds: false", "'timeout_seconds'"),
    ],
)
def test_booleans_and_strings_are_not_numbers(
    tmp_path: Path, repo: Path, line: str, field: str
) -> None:
    path = write(tmp_path, f"prompt: x\n{line}\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)), repo, tmp_path, field, "valid"
    )


@pytest.mark.parametrize(
    "line", ["timeout_seconds: .nan", "timeout_seconds: .inf", "max_budget_usd: .nan"]
)
def test_nan_and_infinity_are_told_they_must_be_finite(
    tmp_path: Path, repo: Path, line: str
) -> None:
    path = write(tmp_path, f"prompt: x\n{line}\n")
    err = assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        line.split(":")[0],
        "finite number",
    )
    assert "at most 86400" not in err.split("(allowed")[0]


def test_nan_from_the_timeout_flag(tmp_path: Path, repo: Path) -> None:
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", "--prompt", "x", "--timeout", "nan"),
        repo,
        tmp_path,
        "'timeout_seconds'",
        "finite number",
    )


def test_a_huge_bad_value_is_shown_as_a_short_excerpt(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, "prompt: x\nkind: " + "k" * 5_000_00 + "\n")
    err = assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "'kind'",
        "500000 characters",
    )
    assert len(err) < 600


@pytest.mark.parametrize(
    ("line", "suggestion"),
    [("promt: x", "did you mean 'prompt'"), ("timeout: 5", "did you mean 'timeout_seconds'")],
)
def test_an_unknown_field_suggests_the_closest(
    tmp_path: Path, repo: Path, line: str, suggestion: str
) -> None:
    path = write(tmp_path, f"prompt: x\n{line}\n")
    err = assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        f"unknown field {line.split(':')[0]!r}",
        suggestion,
    )
    assert "parent_id" not in err and "disallowed_tools" not in err


def test_a_yaml_syntax_error_gives_line_and_column(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, "kind: generic\nprompt: [unclosed\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "invalid YAML at line 3, column 1",
        "line 2, column 9",
    )


def test_a_bad_field_inside_a_subtask_is_named_by_its_path(tmp_path: Path, repo: Path) -> None:
    path = write(tmp_path, "prompt: fan\nsubtasks:\n  - prompt: a\n    files: ['../x']\n")
    assert_rejected(
        conductor(tmp_path, repo, "run", "--local", str(path)),
        repo,
        tmp_path,
        "field 'subtasks.0.files'",
        "outside the repository",
    )
