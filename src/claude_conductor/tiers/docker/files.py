"""The docker tier's files on this machine, as pure functions where possible: the options
(``CONDUCTOR_DOCKER__*``), the compose variables, the ``docker compose`` argv, the secrets, and
the settings a stack installs. ``tiers.docker`` runs compose with them.

A stack's files live under ``<home>/docker/<stack>/``: ``conductor.env`` (compose variables, no
secrets), ``conductor.yaml`` (the portable settings the stack installs in its home), ``secrets/``
(0700; one file per secret, 0644 because compose secrets are bind mounts that the non-root
services must read) and ``data/`` (the stack's Conductor home: worktrees, results, clone cache;
a host folder mounted at the same path in the worker and in agent containers).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from claude_conductor import config_file
from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.docker.configure import AgentContainerSpec

__all__ = [
    "DOCKER_HINT",
    "SCRIPTED_MODEL_URL",
    "DockerOptions",
    "StackFiles",
    "api_url",
    "client_settings",
    "compose_argv",
    "compose_env",
    "docker_options",
    "egress_allow",
    "ensure_secrets",
    "find_compose_dir",
    "override_files",
    "read_env_file",
    "remove_stack_files",
    "repos_dir",
    "stack_config",
    "stack_files",
    "stack_overrides",
    "write_stack_files",
]

DOCKER_HINT = (
    "start a Docker engine (on Debian, as root: `bash .ci/docker-setup.sh` installs docker.io "
    "and Compose v2, starts dockerd and builds the images)"
)
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@+-]*$")


SCRIPTED_MODEL_URL = "http://scripted-model:8765"
SCRIPTED_MODEL_HOST = "scripted-model"
_SCRIPTED_MODEL_KEY = "sk-scripted-offline"
_SECRETS = (
    "postgres_password",
    "prefect_auth",
    "dashboard_password",
    "redis_password",
    "anthropic_api_key",
)
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class DockerOptions(BaseModel):
    """How this machine runs the docker tier (``CONDUCTOR_DOCKER__<FIELD>`` variables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stack: str = Field(default="conductor", description="Compose project; names networks, volumes.")
    compose_dir: Path | None = Field(
        default=None,
        description="Folder of compose.yaml; default deployments/docker of this checkout.",
    )
    http_port: int = Field(default=8080, ge=1, le=65535, description="nginx's published port.")
    bind: str = Field(default="127.0.0.1", description="Host address nginx's port binds to.")
    repos_dir: Path | None = Field(
        default=None,
        description="Host folder of the repositories tasks work on (mounted at the same path "
        "in the worker and in agent containers); default <home>/repos.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Host folder of the stack's Conductor home (worktrees, results, clone "
        "cache; mounted at the same path in the worker and agent containers); default "
        "<home>/docker/<stack>/data.",
    )
    image: str = Field(default="claude-conductor:latest", description="The Conductor image.")
    infra_image: str = Field(
        default="claude-conductor-infra:latest", description="PostgreSQL/Redis/nginx image."
    )
    agent_uid: int | None = Field(
        default=None, ge=1, description="uid of agent containers; default yours (10001 for root)."
    )
    agent_gid: int | None = Field(default=None, ge=0, description="gid of agent containers.")
    agent_cpus: float = Field(default=1.0, gt=0, description="CPUs of one agent container.")
    agent_memory: str = Field(default="2g", description="Memory of one agent container.")
    model_url: str = Field(
        default="https://api.anthropic.com", description="Model endpoint of the agents."
    )
    dashboard_user: str = Field(default="conductor", description="Dashboard sign-in user (nginx).")
    egress_allow: tuple[str, ...] | None = Field(
        default=None,
        description="Host names agents may reach through the egress proxy (comma-separated); "
        "default the model endpoint's host. Nothing else is reachable from an agent.",
    )
    https_port: int = Field(default=8443, ge=1, le=65535, description="nginx's HTTPS port.")
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) for HTTPS; with tls_key, TLS is on."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    docker_socket: Path = Field(
        default=Path("/var/run/docker.sock"), description="The engine's socket (for the worker)."
    )

    @field_validator("egress_allow", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part for part in re.split(r"[,\s]+", value.strip().lower()) if part)
        return value

    @field_validator("egress_allow")
    @classmethod
    def _host_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for host in value or ():
            if not _HOST_RE.match(host):
                raise ValueError(
                    f"{host!r} is not a host name: list exact host names, e.g. "
                    "api.anthropic.com (no scheme, port, path or wildcard)"
                )
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> DockerOptions:
        if (self.tls_cert is None) != (self.tls_key is None):
            given = "tls_cert" if self.tls_cert is not None else "tls_key"
            raise ValueError(
                f"{given} is set but not its pair: set both CONDUCTOR_DOCKER__TLS_CERT and "
                "CONDUCTOR_DOCKER__TLS_KEY, or neither"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class StackFiles(BaseModel):
    """The files ``up`` writes for one stack."""

    model_config = ConfigDict(frozen=True)

    folder: Path = Field(description="<home>/docker/<stack>")
    env_file: Path = Field(description="The compose env file (no secrets in it).")
    config_file: Path = Field(description="Exported settings the stack installs.")
    secrets_dir: Path = Field(description="One file per secret; 0700 folder.")


def docker_options(env: Mapping[str, str] | None = None) -> DockerOptions:
    """``DockerOptions`` from ``CONDUCTOR_DOCKER__*`` variables; InputError naming the bad one."""
    source = os.environ if env is None else env
    prefix = "CONDUCTOR_DOCKER__"
    data = {k[len(prefix) :].lower(): v for k, v in source.items() if k.startswith(prefix) and v}
    try:
        return DockerOptions.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        var = prefix + str(err["loc"][0]).upper() if err["loc"] else prefix
        raise InputError(f"{var}={err.get('input')!r}: {err['msg']}", field=var) from exc


def find_compose_dir(opts: DockerOptions) -> Path:
    """The folder with compose.yaml: the option, else deployments/docker of this checkout."""
    candidates = [opts.compose_dir] if opts.compose_dir else []
    candidates.append(Path(__file__).resolve().parents[4] / "deployments" / "docker")
    for folder in candidates:
        if folder is not None and (folder / "compose.yaml").is_file():
            return folder.resolve()
    raise InputError(
        "no deployments/docker/compose.yaml found: run from a checkout of claude-conductor, "
        "or set CONDUCTOR_DOCKER__COMPOSE_DIR to the folder that has it",
        field="docker.compose_dir",
        value=str(opts.compose_dir) if opts.compose_dir else None,
    )


def stack_files(settings: ConductorSettings, opts: DockerOptions) -> StackFiles:
    folder = settings.home / "docker" / opts.stack
    return StackFiles(
        folder=folder,
        env_file=folder / "conductor.env",
        config_file=folder / "conductor.yaml",
        secrets_dir=folder / "secrets",
    )


def _agent_ids(opts: DockerOptions) -> tuple[int, int]:
    uid = opts.agent_uid if opts.agent_uid is not None else (os.getuid() or 10001)
    gid = opts.agent_gid if opts.agent_gid is not None else (os.getgid() if os.getuid() else 10001)
    return uid, gid


def repos_dir(settings: ConductorSettings, opts: DockerOptions) -> Path:
    return (opts.repos_dir or settings.home / "repos").expanduser().resolve()


def data_dir(settings: ConductorSettings, opts: DockerOptions) -> Path:
    default = stack_files(settings, opts).folder / "data"
    return (opts.data_dir or default).expanduser().resolve()


def egress_allow(opts: DockerOptions, model_url: str) -> tuple[str, ...]:
    """The hosts agents may reach through the proxy: the option, else the model's host."""
    if opts.egress_allow is not None:
        return opts.egress_allow
    host = urlsplit(model_url).hostname
    return (host.lower(),) if host else ()


def compose_env(
    settings: ConductorSettings,
    opts: DockerOptions,
    files: StackFiles,
    *,
    offline_model: bool,
    docker_gid: int,
    agents: int | None = None,
) -> dict[str, str]:
    """The compose variables of a stack (what ``conductor.env`` holds). No secrets.
    ``CONDUCTOR_AGENTS`` is both the pool's slots and the worker's own limit."""
    uid, gid = _agent_ids(opts)
    model_url = SCRIPTED_MODEL_URL if offline_model else opts.model_url
    env = {
        "CONDUCTOR_STACK": opts.stack,
        "CONDUCTOR_IMAGE": opts.image,
        "CONDUCTOR_INFRA_IMAGE": opts.infra_image,
        "CONDUCTOR_REPOS_DIR": str(repos_dir(settings, opts)),
        "CONDUCTOR_DATA_DIR": str(data_dir(settings, opts)),
        "CONDUCTOR_AGENT_UID": str(uid),
        "CONDUCTOR_AGENT_GID": str(gid),
        "CONDUCTOR_AGENT_CPUS": f"{opts.agent_cpus:g}",
        "CONDUCTOR_AGENT_MEMORY": opts.agent_memory,
        "CONDUCTOR_MODEL_URL": model_url,
        "CONDUCTOR_EGRESS_ALLOW": ",".join(egress_allow(opts, model_url)),
        "CONDUCTOR_NO_PROXY": SCRIPTED_MODEL_HOST if offline_model else "localhost",
        "CONDUCTOR_SCRIPTED_MODEL": "1" if offline_model else "0",
        "CONDUCTOR_HTTP_PORT": str(opts.http_port),
        "CONDUCTOR_HTTPS_PORT": str(opts.https_port),
        "CONDUCTOR_TLS": "1" if opts.tls else "",
        "CONDUCTOR_BIND": opts.bind,
        "CONDUCTOR_DASHBOARD_USER": opts.dashboard_user,
        "CONDUCTOR_AGENTS": str(agents if agents is not None else settings.worker.agents),
        "CONDUCTOR_WORKER_QUERY_SECONDS": f"{settings.worker.query_seconds:g}",
        "CONDUCTOR_SECRETS_DIR": str(files.secrets_dir),
        "CONDUCTOR_CONFIG_FILE": str(files.config_file),
        "DOCKER_GID": str(docker_gid),
        "DOCKER_SOCKET": str(opts.docker_socket),
    }
    # Same checks the stack's configure step makes, before anything starts.
    AgentContainerSpec.from_env(
        {**env, "CONDUCTOR_MODEL_URL": env["CONDUCTOR_MODEL_URL"] or "unset"}
    )
    return env


def override_files(env: Mapping[str, str]) -> list[str]:
    """The compose files added to compose.yaml for a stack's variables: TLS."""
    return ["compose.tls.yaml"] if env.get("CONDUCTOR_TLS") == "1" else []


def compose_argv(
    compose_dir: Path, files: StackFiles, *args: str, overrides: Sequence[str] = ()
) -> list[str]:
    """``docker compose`` on compose.yaml (plus ``overrides``) and the stack's env file."""
    extra = [part for name in overrides for part in ("-f", str(compose_dir / name))]
    return [
        "docker", "compose",
        "--project-directory", str(compose_dir),
        "-f", str(compose_dir / "compose.yaml"), *extra,
        "--env-file", str(files.env_file),
        *args,
    ]  # fmt: skip


def stack_overrides(files: StackFiles) -> list[str]:
    """The override files a stack was brought up with (recorded in its env file)."""
    return override_files(read_env_file(files.env_file)) if files.env_file.is_file() else []


def ensure_secrets(
    folder: Path, *, anthropic_api_key: str | None, offline_model: bool
) -> dict[str, Path]:
    """One file per secret in ``folder`` (0700). Passwords are made once and never changed
    (PostgreSQL keeps its first one); the API key is (re)written when one is given."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    made = {
        "postgres_password": lambda: secrets.token_urlsafe(24),
        "prefect_auth": lambda: "conductor:" + secrets.token_urlsafe(24),
        "dashboard_password": lambda: secrets.token_urlsafe(18),
        "redis_password": lambda: secrets.token_urlsafe(24),
        "anthropic_api_key": lambda: _SCRIPTED_MODEL_KEY if offline_model else "",
    }
    paths: dict[str, Path] = {}
    for name in _SECRETS:
        path = folder / name
        value: str | None = None
        if name == "anthropic_api_key" and anthropic_api_key:
            value = anthropic_api_key
        elif not path.is_file() or (name != "anthropic_api_key" and not _read(path)):
            value = made[name]()
        if value is not None and (not path.is_file() or _read(path) != value):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(value + "\n", encoding="utf-8")
            tmp.replace(path)
        # Read by non-root services through a bind mount; the folder keeps others out.
        path.chmod(0o644)
        paths[name] = path
    return paths


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def stack_config(settings: ConductorSettings, agents: int | None) -> dict[str, Any]:
    """The settings the stack installs in its home: everything portable, no secrets; the
    stack sets its own home, tier and API."""
    data = config_file.portable(settings.model_dump(mode="json"))
    for key in ("tier", "server"):
        data.pop(key, None)
    if agents is not None:
        data.setdefault("worker", {})["agents"] = agents
    return data


def _env_line(key: str, value: str) -> str:
    if "\n" in value or "'" in value:
        raise InputError(f"{key}={value!r}: newlines and single quotes are not allowed", field=key)
    return f"{key}={value}" if _PLAIN_VALUE.match(value) else f"{key}='{value}'"


def write_stack_files(
    settings: ConductorSettings,
    opts: DockerOptions,
    *,
    offline_model: bool,
    agents: int | None = None,
    anthropic_api_key: str | None = None,
) -> StackFiles:
    """Write the env file, the stack's settings and the secrets; make the repositories and
    data folders (owned by the agents' uid when this runs as root)."""
    files = stack_files(settings, opts)
    files.folder.mkdir(parents=True, exist_ok=True)
    ensure_secrets(
        files.secrets_dir, anthropic_api_key=anthropic_api_key, offline_model=offline_model
    )
    if opts.tls_cert is not None and opts.tls_key is not None:
        _copy_tls(opts.tls_cert, opts.tls_key, files.secrets_dir)
    files.config_file.write_text(
        "# written by `conductor up --tier docker`: the settings this stack installs\n"
        + yaml.safe_dump(stack_config(settings, agents), sort_keys=True),
        encoding="utf-8",
    )
    try:
        docker_gid = opts.docker_socket.stat().st_gid
    except OSError as exc:
        raise ConductorError(
            f"no Docker socket at {opts.docker_socket} ({exc.strerror}): {DOCKER_HINT}"
        ) from exc
    env = compose_env(
        settings, opts, files, offline_model=offline_model, docker_gid=docker_gid, agents=agents
    )
    for folder in (Path(env["CONDUCTOR_REPOS_DIR"]), Path(env["CONDUCTOR_DATA_DIR"])):
        if not folder.exists():
            folder.mkdir(parents=True)
            if os.getuid() == 0:
                os.chown(folder, int(env["CONDUCTOR_AGENT_UID"]), int(env["CONDUCTOR_AGENT_GID"]))
    lines = ["# written by `conductor up --tier docker`; secrets are in secrets/, not here"]
    lines += [_env_line(k, v) for k, v in env.items()]
    files.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def _copy_tls(cert: Path, key: Path, secrets_dir: Path) -> None:
    """Copy the certificate and key beside the other secrets, readable by nginx's user
    through the bind mount (the 0700 folder keeps everyone else out)."""
    for source, name in ((cert, "tls_cert"), (key, "tls_key")):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise InputError(
                f"cannot read {name.replace('_', ' ')} {str(source)!r} ({exc.strerror}); "
                f"check CONDUCTOR_DOCKER__{name.upper()}",
                field=f"docker.{name}",
                value=str(source),
            ) from exc
        if b"-----BEGIN" not in data:
            raise InputError(
                f"{str(source)!r} is not PEM (no -----BEGIN line); give a PEM {name[4:]}",
                field=f"docker.{name}",
                value=str(source),
            )
        target = secrets_dir / name
        target.write_bytes(data)
        target.chmod(0o644)


def remove_stack_files(settings: ConductorSettings, opts: DockerOptions) -> list[Path]:
    """``down --volumes``: delete the stack's host-side files (secrets, TLS key copy, env file,
    settings, and the data folder when it is the default one under the stack's folder); never
    the repositories folder or a data folder the user named. Returns what was removed."""
    files = stack_files(settings, opts)
    env = read_env_file(files.env_file) if files.env_file.is_file() else {}
    removed: list[Path] = []
    data = Path(env["CONDUCTOR_DATA_DIR"]) if env.get("CONDUCTOR_DATA_DIR") else None
    if data is not None and data.resolve().is_relative_to(files.folder.resolve()):
        shutil.rmtree(data, ignore_errors=True)
        removed.append(data)
    for path in (files.secrets_dir, files.env_file, files.config_file):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    if files.folder.is_dir() and not any(files.folder.iterdir()):
        files.folder.rmdir()
    return removed


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value.strip("'")
    return out


def api_url(opts: DockerOptions) -> str:
    host = "127.0.0.1" if opts.bind in ("0.0.0.0", "", "::") else opts.bind
    return f"http://{host}:{opts.http_port}/api"


def client_settings(
    settings: ConductorSettings, opts: DockerOptions, files: StackFiles
) -> ConductorSettings:
    """``settings`` pointed at the stack: its API through nginx, with its credentials."""
    auth = _read(files.secrets_dir / "prefect_auth")
    server = settings.server.model_copy(
        update={"api_url": api_url(opts), "auth_string": SecretStr(auth)}
    )
    return settings.model_copy(update={"tier": "docker", "server": server})
