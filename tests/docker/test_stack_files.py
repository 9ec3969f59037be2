"""The docker tier's pure parts, without a Docker engine: options, compose variables, argv,
secrets, the settings a stack installs, and the agent pool's job template."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.docker.configure import AgentContainerSpec, install_config
from claude_conductor.tiers.docker.files import (
    SCRIPTED_MODEL_URL,
    DockerOptions,
    compose_argv,
    compose_env,
    docker_options,
    ensure_secrets,
    override_files,
    read_env_file,
    remove_stack_files,
    stack_config,
    stack_files,
    write_stack_files,
)
from claude_conductor.work_pools.control_plane import zombie_automation
from claude_conductor.work_pools.pools import LOCKED_JOB_VARIABLES, LOCKED_TEMPLATE, load_template

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "deployments" / "docker"


def _settings(home: Path, **data: object) -> ConductorSettings:
    return ConductorSettings.model_validate({"home": str(home), **data})


def _spec(**over: object) -> AgentContainerSpec:
    env = {
        "CONDUCTOR_STACK": "s1",
        "CONDUCTOR_IMAGE": "claude-conductor:test",
        "CONDUCTOR_REPOS_DIR": "/srv/repos",
        "CONDUCTOR_DATA_DIR": "/srv/conductor-data",
        "CONDUCTOR_AGENT_UID": "1000",
        "CONDUCTOR_AGENT_GID": "1000",
        "CONDUCTOR_AGENT_CPUS": "0.5",
        "CONDUCTOR_AGENT_MEMORY": "1G",
        "CONDUCTOR_MODEL_URL": "http://scripted-model:8765",
        **{k: str(v) for k, v in over.items()},
    }
    return AgentContainerSpec.from_env(env)


def test_options_come_from_conductor_docker_variables() -> None:
    opts = docker_options(
        {"CONDUCTOR_DOCKER__STACK": "mine", "CONDUCTOR_DOCKER__HTTP_PORT": "9000"}
    )
    assert (opts.stack, opts.http_port, opts.bind) == ("mine", 9000, "127.0.0.1")
    with pytest.raises(InputError, match="CONDUCTOR_DOCKER__HTTP_PORT"):
        docker_options({"CONDUCTOR_DOCKER__HTTP_PORT": "lots"})
    with pytest.raises(InputError, match="CONDUCTOR_DOCKER__NOPE"):
        docker_options({"CONDUCTOR_DOCKER__NOPE": "1"})


def test_compose_env_has_no_secret_and_names_the_stack(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    opts = DockerOptions(stack="s1", repos_dir=tmp_path / "repos", agent_uid=1000, agent_gid=1000)
    files = stack_files(settings, opts)
    env = compose_env(settings, opts, files, offline_model=True, docker_gid=999)
    assert env["CONDUCTOR_STACK"] == "s1"
    assert env["CONDUCTOR_MODEL_URL"] == SCRIPTED_MODEL_URL
    assert env["CONDUCTOR_SCRIPTED_MODEL"] == "1"
    assert env["CONDUCTOR_NO_PROXY"] == "scripted-model"
    assert env["CONDUCTOR_REPOS_DIR"] == str((tmp_path / "repos").resolve())
    assert env["CONDUCTOR_SECRETS_DIR"] == str(files.secrets_dir)
    assert env["DOCKER_GID"] == "999"
    assert not any("PASSWORD" in k or "AUTH" in k or "KEY" in k for k in env)
    online = compose_env(settings, opts, files, offline_model=False, docker_gid=999)
    assert online["CONDUCTOR_MODEL_URL"] == "https://api.anthropic.com"
    assert online["CONDUCTOR_SCRIPTED_MODEL"] == "0"
    assert online["CONDUCTOR_EGRESS_ALLOW"] == "api.anthropic.com"
    assert env["CONDUCTOR_DATA_DIR"] == str((tmp_path / "docker" / "s1" / "data").resolve())


def test_compose_env_refuses_a_bad_stack_name(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    opts = DockerOptions(stack="Bad Name", agent_uid=1000, agent_gid=1000)
    with pytest.raises(InputError, match="CONDUCTOR_STACK='Bad Name'"):
        compose_env(settings, opts, stack_files(settings, opts), offline_model=False, docker_gid=1)


def test_compose_argv_uses_the_stack_env_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files = stack_files(settings, DockerOptions(stack="s1"))
    argv = compose_argv(COMPOSE_DIR, files, "up", "-d")
    assert argv[:2] == ["docker", "compose"]
    assert argv[argv.index("--env-file") + 1] == str(files.env_file)
    assert argv[argv.index("-f") + 1] == str(COMPOSE_DIR / "compose.yaml")
    assert argv[-2:] == ["up", "-d"]


def test_secrets_are_made_once_and_readable_only_through_their_folder(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    first = ensure_secrets(folder, anthropic_api_key=None, offline_model=True)
    values = {name: path.read_text() for name, path in first.items()}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert values["prefect_auth"].startswith("conductor:")
    assert len(values["postgres_password"].strip()) >= 24
    assert values["anthropic_api_key"].strip() == "sk-scripted-offline"
    assert len(values["redis_password"].strip()) >= 24
    again = ensure_secrets(folder, anthropic_api_key="sk-ant-real", offline_model=False)
    assert again["postgres_password"].read_text() == values["postgres_password"]
    assert again["prefect_auth"].read_text() == values["prefect_auth"]
    assert again["anthropic_api_key"].read_text().strip() == "sk-ant-real"


def test_stack_config_is_portable_and_has_no_secret(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        worker={"agents": 3},
        server={"auth_string": "u:p"},
        dashboard={"password": "pw"},
        agent={"extra_env": {"MY_TOKEN": "t", "FOO": "bar"}},
    )
    data = stack_config(settings, agents=5)
    text = yaml.safe_dump(data)
    assert "home" not in data and "server" not in data and "tier" not in data
    assert "pw" not in text and "u:p" not in text and "MY_TOKEN" not in text
    assert data["worker"]["agents"] == 5
    assert data["agent"]["extra_env"] == {"FOO": "bar"}


def test_env_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("# c\nA=1\nB='two words'\n")
    assert read_env_file(path) == {"A": "1", "B": "two words"}


def test_spec_names_the_variable_that_is_wrong() -> None:
    with pytest.raises(InputError, match=r"CONDUCTOR_REPOS_DIR='relative/path'.*absolute"):
        _spec(CONDUCTOR_REPOS_DIR="relative/path")
    with pytest.raises(InputError, match="CONDUCTOR_AGENT_UID"):
        _spec(CONDUCTOR_AGENT_UID="0")
    with pytest.raises(InputError, match="CONDUCTOR_AGENT_MEMORY"):
        _spec(CONDUCTOR_AGENT_MEMORY="lots")


def test_the_locked_template_renders_a_plain_engine_whatever_is_asked() -> None:
    """The docker tier's pools: rendered by Prefect's own process worker configuration, the
    template has no command, env or working_dir to fill in, and its schema forbids others."""
    from prefect.utilities.schema_tools import ValidationError, validate
    from prefect.utilities.templating import apply_values
    from prefect.workers.process import ProcessJobConfiguration

    template = load_template(LOCKED_TEMPLATE)
    schema = template["variables"]
    assert set(schema["properties"]) == LOCKED_JOB_VARIABLES
    assert schema["additionalProperties"] is False
    assert not {"command", "env", "working_dir"} & set(template["job_configuration"])
    wide = {"command": "sh -c evil", "working_dir": "/", "user": "0:0", "read_only": False,
            "volumes": ["/var/run/docker.sock:/var/run/docker.sock"], "networks": ["backend"]}  # fmt: skip
    for name, value in wide.items():
        with pytest.raises(ValidationError, match=f"'{name}' was unexpected"):
            validate({name: value}, schema, raise_on_error=True, ignore_required=True)
    # What the worker renders: only the three placeholders; a job variable named anything
    # else has no place to go (and the API refuses it first, see test_docker_stack).
    rendered = apply_values(template["job_configuration"], {"name": "t-1", "labels": {},
                                                              "stream_output": True, **wide})  # fmt: skip
    config = ProcessJobConfiguration.model_validate(rendered)
    assert config.command is None and config.working_dir is None and config.env == {}


def test_install_config_keeps_what_the_stack_owns_out(tmp_path: Path) -> None:
    source = tmp_path / "conductor.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "home": "/elsewhere",
                "tier": "standalone",
                "server": {"api_url": "http://127.0.0.1:4200/api"},
                "worker": {"agents": 4},
                "agent": {"inactivity_timeout_seconds": 77},
            }
        )
    )
    target = install_config(source, tmp_path / "home")
    assert target == tmp_path / "home" / "config.yaml"
    installed = yaml.safe_load(target.read_text())
    assert installed == {"worker": {"agents": 4}, "agent": {"inactivity_timeout_seconds": 77}}
    assert install_config(tmp_path / "missing.yaml", tmp_path / "home") is None
    source.write_text("worker: {agents: 0}\n")
    with pytest.raises(InputError, match=r"worker\.agents"):
        install_config(source, tmp_path / "home")


def test_zombie_automation_crashes_silent_runs() -> None:
    automation = zombie_automation()
    trigger = automation.trigger
    assert trigger.posture.value == "Proactive"  # type: ignore[union-attr]
    assert trigger.within.total_seconds() == 90  # type: ignore[union-attr]
    assert automation.actions[0].type == "change-flow-run-state"


def test_tls_needs_both_files_and_adds_its_compose_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="CONDUCTOR_DOCKER__TLS_KEY"):
        docker_options({"CONDUCTOR_DOCKER__TLS_CERT": "/etc/cert.pem"})
    settings = _settings(tmp_path)
    opts = DockerOptions(
        stack="s1", tls_cert=Path("/c.pem"), tls_key=Path("/k.pem"), agent_uid=1000, agent_gid=1
    )
    env = compose_env(settings, opts, stack_files(settings, opts), offline_model=True, docker_gid=1)
    assert override_files(env) == ["compose.tls.yaml"]
    argv = compose_argv(
        COMPOSE_DIR, stack_files(settings, opts), "ps", overrides=["compose.tls.yaml"]
    )
    files = [argv[i + 1] for i, part in enumerate(argv) if part == "-f"]
    assert files == [str(COMPOSE_DIR / "compose.yaml"), str(COMPOSE_DIR / "compose.tls.yaml")]


def test_agents_reach_only_the_model_host_through_the_proxy(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    opts = DockerOptions(stack="s1", agent_uid=1000, agent_gid=1000)
    files = stack_files(settings, opts)
    offline = compose_env(settings, opts, files, offline_model=True, docker_gid=1)
    online = compose_env(settings, opts, files, offline_model=False, docker_gid=1)
    assert override_files(offline) == override_files(online) == []  # same networks either way
    assert offline["CONDUCTOR_EGRESS_ALLOW"] == "scripted-model"
    assert online["CONDUCTOR_EGRESS_ALLOW"] == "api.anthropic.com"
    listed = docker_options({"CONDUCTOR_DOCKER__EGRESS_ALLOW": "api.anthropic.com, Proxy.Corp"})
    env = compose_env(settings, listed.model_copy(update={"agent_uid": 1, "agent_gid": 1}),
                      files, offline_model=False, docker_gid=1)  # fmt: skip
    assert env["CONDUCTOR_EGRESS_ALLOW"] == "api.anthropic.com,proxy.corp"
    with pytest.raises(InputError, match=r"CONDUCTOR_DOCKER__EGRESS_ALLOW.*not a host name"):
        docker_options({"CONDUCTOR_DOCKER__EGRESS_ALLOW": "https://api.anthropic.com/v1"})
    assert (
        compose_env(settings, opts, files, offline_model=True, docker_gid=1, agents=3)[
            "CONDUCTOR_AGENTS"
        ]
        == "3"
    )


def test_write_stack_files_keeps_secrets_out_of_the_env_file(tmp_path: Path) -> None:
    socket_file = tmp_path / "docker.sock"
    socket_file.touch()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\ny\n")
    settings = _settings(tmp_path / "home", worker={"agents": 3})
    opts = DockerOptions(
        stack="s1",
        repos_dir=tmp_path / "repos",
        agent_uid=1000,
        agent_gid=1000,
        docker_socket=socket_file,
        tls_cert=cert,
        tls_key=key,
    )
    files = write_stack_files(settings, opts, offline_model=False, anthropic_api_key="sk-ant-xyz")
    env_text = files.env_file.read_text()
    secret_values = [p.read_text().strip() for p in files.secrets_dir.iterdir()]
    assert all(value not in env_text for value in secret_values if value)
    assert (files.secrets_dir / "tls_key").read_text() == key.read_text()
    assert (files.secrets_dir / "anthropic_api_key").read_text().strip() == "sk-ant-xyz"
    assert read_env_file(files.env_file)["CONDUCTOR_AGENTS"] == "3"
    assert yaml.safe_load(files.config_file.read_text().split("\n", 1)[1])["worker"]["agents"] == 3
    assert (tmp_path / "repos").is_dir()
    data = Path(read_env_file(files.env_file)["CONDUCTOR_DATA_DIR"])
    assert data.is_dir() and data.is_relative_to(files.folder)
    key.write_text("not a key")
    with pytest.raises(InputError, match="not PEM"):
        write_stack_files(settings, opts, offline_model=False)
    # `down --volumes`: the secrets (API key, TLS key), the data and the stack's files go;
    # the repositories stay.
    (data / "results").mkdir()
    removed = remove_stack_files(settings, opts)
    assert files.secrets_dir in removed and data in removed
    assert not files.folder.exists()
    assert (tmp_path / "repos").is_dir()
