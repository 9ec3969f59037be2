"""`conductor run --local`: the whole path a user takes, with the real `claude` binary against
the scripted model, real git, and the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_conductor.demo.script_steps import text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from helpers import git

pytestmark = pytest.mark.integration


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "main.py").write_text('print("Hello, world!")\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    (repo / "notes.txt").write_text("uncommitted work of the user\n")
    return repo


Conductor = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def conductor(tmp_path: Path, agent_env: dict[str, str]) -> Conductor:
    home = tmp_path / "home"

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **agent_env,
            "CONDUCTOR_HOME": str(home),
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
        }
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd or tmp_path,
        )

    run.home = home  # type: ignore[attr-defined]
    return run


def task_file(tmp_path: Path, body: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_refactor_task_commits_exactly_its_files_and_leaves_the_checkout_alone(
    tmp_path: Path, user_repo: Path, conductor: Conductor, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script(
        "greet",
        [
            tool_use(
                "Write",
                {"file_path": "greet.py", "content": "def greet(n):\n    return f'Hello, {n}!'\n"},
            ),
            tool_use(
                "Write",
                {
                    "file_path": "main.py",
                    "content": "from greet import greet\nprint(greet('world'))\n",
                },
            ),
            text("Added greet.py and used it in main.py."),
        ],
    )
    head_before = git(user_repo, "rev-parse", "HEAD")
    status_before = git(user_repo, "status", "--porcelain")
    path = task_file(
        tmp_path,
        f"kind: refactor\ntitle: Greet\nprompt: add greet {marker}\nrepo: ./project\n"
        "verify: python3 main.py\ntimeout_seconds: 120\n",
    )
    out = conductor("run", str(path), "--local", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded"
    assert result["summary"].startswith("Added greet.py")
    assert sorted(result["files_changed"]) == ["greet.py", "main.py"]
    assert result["cost_usd"] > 0 and result["input_tokens"] > 0 and result["output_tokens"] > 0
    assert result["num_turns"] >= 3 and result["session_id"]
    assert result["verify"]["exit_code"] == 0 and "Hello, world!" in result["verify"]["output_tail"]
    branch = result["branch"]
    assert branch == f"conductor/{result['task_id']}"
    changed = git(user_repo, "diff", "--name-only", f"{result['base_commit']}..{branch}").split()
    assert sorted(changed) == ["greet.py", "main.py"]
    assert git(user_repo, "rev-parse", branch).strip() == result["head_commit"]
    # The user's checkout is untouched.
    assert git(user_repo, "rev-parse", "HEAD") == head_before
    assert git(user_repo, "status", "--porcelain") == status_before
    assert (user_repo / "main.py").read_text() == 'print("Hello, world!")\n'
    assert Path(result["transcript_path"]).is_file() and Path(result["patch_path"]).is_file()
    assert "sk-scripted" not in Path(result["transcript_path"]).read_text()


def test_command_task_reports_exit_code_and_output(
    tmp_path: Path, user_repo: Path, conductor: Conductor
) -> None:
    out = conductor(
        "run",
        "--kind",
        "command",
        "--command",
        "echo built > out.txt; echo done; exit 3",
        "--repo",
        str(user_repo),
        "--local",
        "--json",
    )
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "failed"
    assert result["verify"]["exit_code"] == 3 and "done" in result["verify"]["output_tail"]
    assert "exited with code 3" in result["error"]
    assert result["files_changed"] == ["out.txt"]


def test_failing_verify_fails_the_task(
    tmp_path: Path, user_repo: Path, conductor: Conductor, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script("noop", [text("Nothing to do.")])
    out = conductor(
        "run",
        "--prompt",
        f"look {marker}",
        "--repo",
        str(user_repo),
        "--verify",
        "echo checking; false",
        "--local",
        "--json",
    )
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["status"] == "failed"
    assert result["verify"]["exit_code"] == 1 and "checking" in result["verify"]["output_tail"]
    assert "verify command" in result["error"]
    assert result["workspace_path"] and Path(result["workspace_path"]).is_dir()


def test_two_tasks_on_one_repository_at_once(
    tmp_path: Path, user_repo: Path, agent_env: dict[str, str], scripted_model: ScriptedModel
) -> None:
    for name in ("a", "b"):
        scripted_model.add_script(
            f"w{name}",
            [
                tool_use("Write", {"file_path": f"{name}.txt", "content": name}),
                text(f"wrote {name}"),
            ],
        )
    env = {**agent_env, "CONDUCTOR_HOME": str(tmp_path / "home")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "claude_conductor.cli.main",
                "run",
                "--prompt",
                f"write [script:w{name}]",
                "--repo",
                str(user_repo),
                "--local",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert {r["files_changed"][0] for r in results} == {"a.txt", "b.txt"}
    assert len({r["branch"] for r in results}) == 2
    for r in results:
        assert (
            git(user_repo, "diff", "--name-only", f"{r['base_commit']}..{r['branch']}").split()
            == r["files_changed"]
        )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_file", ["nope.yaml", "no such file"]),
        ("invalid_yaml", ["invalid YAML"]),
        ("unknown_kind", ["'kind'", "'poetry'", "code_review"]),
        ("negative_timeout", ["'timeout_seconds'", "-1"]),
        ("repo_missing", ["does not exist"]),
        ("repo_not_git", ["not a git repository"]),
        ("unknown_ref", ["'no-such-ref'", "not found"]),
    ],
)
def test_bad_input_is_one_clear_line_and_creates_nothing(
    tmp_path: Path, user_repo: Path, conductor: Conductor, case: str, expected: list[str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    bodies = {
        "invalid_yaml": "prompt: [oops\n",
        "unknown_kind": "kind: poetry\nprompt: x\nrepo: ./project\n",
        "negative_timeout": "prompt: x\nrepo: ./project\ntimeout_seconds: -1\n",
        "repo_missing": "prompt: x\nrepo: ./nowhere\n",
        "repo_not_git": "prompt: x\nrepo: ./plain\n",
        "unknown_ref": "prompt: x\nrepo: ./project\nref: no-such-ref\n",
    }
    path = tmp_path / "nope.yaml" if case == "missing_file" else task_file(tmp_path, bodies[case])
    out = conductor("run", str(path), "--local", "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for part in expected:
        assert part in lines[0]
    assert "Traceback" not in out.stderr
    assert not conductor.home.exists()  # type: ignore[attr-defined]


def test_commands_and_verify_never_see_control_plane_variables(
    tmp_path: Path, user_repo: Path, agent_env: dict[str, str]
) -> None:
    """A `kind: command` task and a `verify` command run untrusted code: they get the agent's
    scrubbed environment, never the Prefect credential or Conductor's own settings."""
    env = {
        **agent_env,
        "CONDUCTOR_HOME": str(tmp_path / "home"),
        "PREFECT_API_AUTH_STRING": "admin:control-plane-pass",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "DATABASE_PASSWORD": "db-pass",
        "CONDUCTOR_AGENT__EXTRA_ENV": '{"GIVEN_TO_AGENTS": "yes"}',
    }
    dump = "env | sort | grep -v '^ANTHROPIC_API_KEY=' > env.txt"  # the key would be held back
    out = subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "run", "--kind", "command",
         "--command", dump, "--verify", "env | sort", "--repo", str(user_repo), "--local",
         "--json"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    seen = git(user_repo, "show", f"{result['branch']}:env.txt")
    for text_ in (seen, result["verify"]["output_tail"]):
        assert "control-plane-pass" not in text_ and "db-pass" not in text_
        names = {line.split("=", 1)[0] for line in text_.splitlines() if "=" in line}
        assert not {
            n for n in names if n.startswith(("PREFECT_", "CONDUCTOR_HOME", "CONDUCTOR_AGENT"))
        }
        assert "GIVEN_TO_AGENTS=yes" in text_ and "PATH=" in text_
