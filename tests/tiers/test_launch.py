"""The standalone tier's commands and environments, checked without spawning anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import launch


@pytest.fixture
def settings(tmp_path: Path) -> ConductorSettings:
    return ConductorSettings(
        home=tmp_path / "home",
        server=ServerSettings(host="127.0.0.1", port=4321),
        worker=WorkerSettings(agents=3, query_seconds=0.5),
    )


CALLER_ENV = {
    "PATH": "/usr/bin",
    "PYTHONPATH": "/somewhere",
    "ANTHROPIC_API_KEY": "sk-test",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
    "CONDUCTOR_AGENT__DEFAULT_MODEL": "sonnet",
    "PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/x",
    "PREFECT_API_KEY": "pnu_secret",
    "PREFECT_PROFILE": "cloud",
    "PREFECT_HOME": "/root/.prefect",
    "PREFECT__FLOW_RUN_ID": "abc",
    "PREFECT_LOGGING_LEVEL": "DEBUG",
}


def test_server_runs_on_sqlite_under_the_home_with_analytics_off(
    settings: ConductorSettings,
) -> None:
    argv = launch.server_argv(settings, python="/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "claude_conductor.tiers.prefect_server"]
    assert argv[argv.index("--port") + 1] == "4321"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    env = launch.server_env(settings, CALLER_ENV)
    home = settings.home / "prefect"
    assert env["PREFECT_HOME"] == str(home)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{home}/prefect.db"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["DO_NOT_TRACK"] == "1"
    assert env["PREFECT_API_URL"] == env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert "PREFECT_API_KEY" not in env and "PREFECT_PROFILE" not in env
    assert env[launch.STACK_MARKER] == str(settings.home)


def test_one_worker_serves_both_pools_and_passes_the_callers_environment_through(
    settings: ConductorSettings,
) -> None:
    argv = launch.worker_argv(settings, python=sys.executable)
    assert argv[:3] == [sys.executable, "-m", "claude_conductor.work_pools.serve"]
    pools = [argv[i + 1] for i, a in enumerate(argv) if a == "--pool"]
    names = [argv[i + 1] for i, a in enumerate(argv) if a == "--name"]
    assert pools == ["conductor-agents", "conductor-coordinators"]
    assert names == ["conductor-agents-worker", "conductor-coordinators-worker"]
    assert "--limit" not in argv  # the pools' limits are the gate (see worker_argv)

    env = launch.worker_env(settings, CALLER_ENV, {"EXTRA": "1"})
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "0.5"
    assert env["PREFECT_HOME"] == str(settings.home / "prefect")
    assert env["CONDUCTOR_HOME"] == str(settings.home)
    assert env["ANTHROPIC_API_KEY"] == "sk-test"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["CONDUCTOR_AGENT__DEFAULT_MODEL"] == "sonnet"
    assert env["PYTHONPATH"] == "/somewhere"
    assert env["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert env["EXTRA"] == "1"
    for dropped in ("PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT__FLOW_RUN_ID"):
        assert dropped not in env


def test_auth_string_reaches_server_and_workers(settings: ConductorSettings) -> None:
    secured = settings.model_copy(
        update={"server": settings.server.model_copy(update={"auth_string": "u:p"})}
    )
    secured = ConductorSettings.model_validate(secured.model_dump() | {"home": settings.home})
    assert launch.server_env(secured, {})["PREFECT_SERVER_API_AUTH_STRING"] == "u:p"
    assert launch.worker_env(secured, {})["PREFECT_API_AUTH_STRING"] == "u:p"


def test_a_wildcard_host_is_reached_on_loopback(settings: ConductorSettings) -> None:
    wide = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": "0.0.0.0"})}
    )
    assert launch.local_api_url(wide) == "http://127.0.0.1:4321/api"
    assert launch.ui_url(wide) == "http://127.0.0.1:4321"


@pytest.mark.parametrize("agents", [0, -3, 65, True])
def test_scale_agents_rejects_impossible_counts_before_touching_anything(
    settings: ConductorSettings, agents: int
) -> None:
    with pytest.raises(InputError) as caught:
        standalone.scale_agents(settings, agents)
    assert caught.value.exit_code == 2
    assert caught.value.field == "worker.agents"
    assert "from 1 to 64" in str(caught.value)
    assert not (settings.home / "config.yaml").exists()


def test_scale_agents_without_a_server_saves_the_count_and_keeps_other_keys(
    settings: ConductorSettings,
) -> None:
    settings.home.mkdir(parents=True)
    config = settings.home / "config.yaml"
    config.write_text(
        "tier: standalone\nworker:\n  pool: my-pool\n  agents: 1\nagent:\n  default_model: opus\n"
    )
    result = standalone.scale_agents(settings, 4)
    assert not result.applied_live
    assert "next `conductor up`" in str(result)
    data = yaml.safe_load(config.read_text())
    assert data == {
        "tier": "standalone",
        "worker": {"pool": "my-pool", "agents": 4},
        "agent": {"default_model": "opus"},
    }


def test_up_refuses_to_shadow_another_api(settings: ConductorSettings) -> None:
    other = settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"api_url": "http://10.0.0.5:4200/api"})
        }
    )
    with pytest.raises(InputError, match="CONDUCTOR_API_URL"):
        standalone.up(other)
    assert not (settings.run_dir).exists()


def test_down_and_status_with_nothing_running(settings: ConductorSettings) -> None:
    assert standalone.down(settings, grace_seconds=1) == []
    info = standalone.status(settings)
    assert not info.healthy and info.daemons == [] and info.pids == {}
    assert info.ui_url == "http://127.0.0.1:4321"


def test_a_warm_server_start_skips_what_the_database_already_has(
    settings: ConductorSettings,
) -> None:
    """Migrations and block-type registration run at the first start on a database (and after
    an upgrade or a restore); later starts skip them."""
    skipped = "PREFECT_API_DATABASE_MIGRATE_ON_START"
    assert skipped not in launch.server_env(settings, {})  # no database yet
    database = launch.prefect_home(settings) / "prefect.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"")
    assert skipped not in launch.server_env(settings, {})  # never prepared by a server
    launch.record_server_prepared(settings)  # what `up` does once the server is healthy
    env = launch.server_env(settings, {})
    assert env[skipped] == "false" and env["PREFECT_API_BLOCKS_REGISTER_ON_START"] == "false"
    # Another database file in its place (a restore, a deleted home): prepared again.
    database.rename(database.with_name("old.db"))
    database.write_bytes(b"")
    assert skipped not in launch.server_env(settings, {})
