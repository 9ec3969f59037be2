"""Conductor's settings: one ``ConductorSettings``, nested, from ``CONDUCTOR_*`` variables
and ``<home>/config.yaml`` (variables win over the file, the file over defaults).

Nested fields use ``__``: ``CONDUCTOR_AGENT__INACTIVITY_TIMEOUT_SECONDS=120``. A few common
ones have short aliases (``CONDUCTOR_HOME``, ``CONDUCTOR_API_URL``, ``CONDUCTOR_CLAUDE_PATH``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from claude_conductor import config_file
from claude_conductor.errors import InputError
from claude_conductor.redaction import (
    MASK,
    SECRET_SETTINGS,
    is_secret_name,
    secret_values,
    strip_url_credentials,
)

__all__ = [
    "AgentSettings",
    "ConductorSettings",
    "DashboardSettings",
    "DockerPlacementSettings",
    "KubernetesPlacementSettings",
    "ServerSettings",
    "WorkerSettings",
    "config_path",
    "default_home",
    "load_settings",
    "run_settings",
]

Tier = Literal["standalone", "docker", "kubernetes"]


def default_home() -> Path:
    """``$CONDUCTOR_HOME`` or ``~/.claude-conductor``."""
    return Path(os.environ.get("CONDUCTOR_HOME") or Path.home() / ".claude-conductor").expanduser()


def config_path(home: Path | None = None) -> Path:
    """``<home>/config.yaml`` (read and written only through ``claude_conductor.config_file``)."""
    return config_file.config_path(home or default_home())


class DockerPlacementSettings(BaseModel):
    """How the ``docker`` placement runs an agent: its own sibling container per launch
    (``agent.placement: docker``; the docker tier's worker sets these). Nothing a task or a
    job variable sets changes them."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        default="claude-conductor:latest",
        description="Image of agent containers: it must have the `claude` binary at the same "
        "path as the engine's (the docker tier uses its one Conductor image).",
    )
    network: str | None = Field(
        default=None,
        description="Docker network of agent containers (the docker tier's internal "
        "`<stack>-agents`); required: an agent never lands on Docker's default bridge.",
    )
    user: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*:[0-9]+$",
        description="uid:gid agent containers run as; default the engine's own (never root: "
        "the worktree it writes belongs to the engine's user).",
    )
    memory: str = Field(
        default="2g",
        pattern=r"^[1-9][0-9]*[kmgKMG]?$",
        description="Memory of one agent container, swap included (e.g. 2g).",
    )
    cpus: float = Field(default=1.0, gt=0, le=256, description="CPUs of one agent container.")
    pids_limit: int = Field(
        default=512, ge=16, description="Most processes and threads in one agent container."
    )
    tmp_size: str = Field(
        default="512m",
        pattern=r"^[1-9][0-9]*[kmgKMG]?$",
        description="Size of each tmpfs (/tmp and the agent's HOME); counts against memory.",
    )
    proxy_url: str | None = Field(
        default=None,
        description="Egress proxy given to agents as HTTPS_PROXY/HTTP_PROXY (the docker tier's "
        "allow-list proxy); None: no proxy variables.",
    )
    no_proxy: list[str] = Field(
        default_factory=list,
        description="Hosts agents reach without the proxy (NO_PROXY), e.g. the offline model.",
    )
    stack: str = Field(
        default="",
        description="Value of the `io.claude-conductor.stack` label on agent containers (how "
        "`conductor down` and a restarted worker find them).",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine URL; default DOCKER_HOST, else the local socket.",
    )


_CPU_QUANTITY = r"^([1-9][0-9]{0,5}m|[1-9][0-9]?(\.[0-9]{1,3})?)$"
_MEMORY_QUANTITY = r"^[1-9][0-9]{0,6}(Mi|Gi)$"


class KubernetesPlacementSettings(BaseModel):
    """Where and how the ``kubernetes`` placement runs an agent: one Job per task, made from
    the hardened agent Job template (``agents/templates/kubernetes-job.json``)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(
        default="claude-conductor",
        min_length=1,
        max_length=63,
        description="Namespace of the agent Jobs (the worker's Role must allow jobs there).",
    )
    image: str = Field(
        default="claude-conductor:0.1.0",
        min_length=1,
        description="Image of the agent pod: Conductor's image, pinned (never :latest).",
    )
    api_url: str | None = Field(
        default=None,
        description="Kubernetes API to use (e.g. a `kubectl proxy`); default: the in-cluster "
        "service account of the worker pod, else the kubeconfig.",
    )
    kubeconfig: Path | None = Field(
        default=None, description="A kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."
    )
    context: str | None = Field(
        default=None, description="The kubeconfig context (default: its current one)."
    )
    template_path: Path | None = Field(
        default=None,
        description="Your own agent Job template (JSON, same shape as the packaged one, e.g. "
        "mounted from a ConfigMap); default the packaged, hardened one.",
    )
    cpu_request: str = Field(
        pattern=_CPU_QUANTITY, default="500m", description="CPU reserved for one agent pod."
    )
    cpu_limit: str = Field(
        pattern=_CPU_QUANTITY, default="2", description="Most CPU one agent pod may use."
    )
    memory_request: str = Field(
        pattern=_MEMORY_QUANTITY, default="512Mi", description="Memory reserved for one agent pod."
    )
    memory_limit: str = Field(
        pattern=_MEMORY_QUANTITY, default="2Gi", description="Most memory one agent pod may use."
    )
    deadline_margin_seconds: int = Field(
        default=300,
        ge=30,
        le=3600,
        description="activeDeadlineSeconds = the task's timeout plus this (pod start, image "
        "pull, moving the workspace): Kubernetes ends the Job even if the engine is gone.",
    )
    finished_job_ttl_seconds: int = Field(
        default=300,
        ge=0,
        le=604800,
        description="ttlSecondsAfterFinished: Kubernetes deletes a finished Job after this "
        "long, even if the engine never did (results live in Prefect).",
    )
    start_timeout_seconds: float = Field(
        default=300,
        gt=0,
        description="How long the agent pod may take to start running (scheduling, image "
        "pull) before the task fails with the pod's reason.",
    )
    max_workspace_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest workspace snapshot streamed into an agent pod.",
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, image: str) -> str:
        if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
            raise ValueError("give a pinned tag such as claude-conductor:0.1.0, never :latest")
        return image


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claude_path: Path | None = Field(
        default=None,
        description="The `claude` binary; default the one bundled in claude-agent-sdk.",
    )
    inactivity_timeout_seconds: float = Field(
        default=300, gt=0, description="Stop an agent whose output stalls this long."
    )
    result_grace_seconds: float = Field(
        default=3, ge=0, description="After the result line, how long the CLI may linger."
    )
    kill_grace_seconds: float = Field(
        default=3, ge=0, description="Between SIGTERM and SIGKILL when stopping an agent."
    )
    max_line_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024 * 1024, description="Longest stream-json line read."
    )
    default_model: str | None = Field(default=None, description="Model when a task names none.")
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for every agent process."
    )
    placement: Literal["process", "docker", "kubernetes"] = Field(
        default="process",
        description="Where agents and their commands run: `process` (a sandboxed child of "
        "the task's engine), `docker` (a container per task), `kubernetes` (a pod per task).",
    )
    sandbox: bool | None = Field(
        default=None,
        description="Run the agent's Bash commands in the claude CLI's sandbox (bubblewrap on "
        "Linux: `apt-get install bubblewrap socat`), and a task's own commands (`kind: "
        "command`, verify) in Conductor's bubblewrap sandbox: they may write only the task's "
        "worktree and temp folder, cannot read Conductor's control files and reach no "
        "network (commands: none at all). Unset: "
        "on where agents run as processes of this machine (the standalone tier), off inside "
        "the docker tier's agent containers, whose own filesystem and network are the "
        "boundary. Off (CONDUCTOR_AGENT__SANDBOX=false): Bash, commands and verify can do "
        "whatever your user can; "
        "the file tools stay confined to the worktree either way.",
    )
    sandbox_allowed_domains: list[str] = Field(
        default_factory=list,
        description="Hosts the agent's sandboxed Bash commands may reach (e.g. `pypi.org`, "
        "`*.github.com`); none by default. The model endpoint needs no entry: the CLI itself "
        "reaches it, outside the sandbox. A task's own commands (`kind: command`, verify) "
        "get no network either way.",
    )
    kubernetes: KubernetesPlacementSettings = Field(
        default_factory=KubernetesPlacementSettings,
        description="The `kubernetes` placement: namespace, image, resources, template.",
    )
    credentials_block: str | None = Field(
        default=None,
        description="Name of an `anthropic-credentials` Prefect block (the API key and base "
        "URL, kept on the Prefect server): when set, agents get their model credentials from "
        "it instead of the worker's ANTHROPIC_* variables.",
    )
    docker: DockerPlacementSettings = Field(
        default_factory=DockerPlacementSettings,
        description="The `docker` placement's container: image, network, user, limits, proxy.",
    )


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Where the Prefect server listens.")
    port: int = Field(default=4200, ge=1, le=65535, description="Prefect server port.")
    api_url: str | None = Field(
        default=None,
        description="A Prefect API to use instead of the local one (e.g. the docker tier's).",
    )
    auth_string: SecretStr | None = Field(
        default=None, description="Basic auth `user:pass` for a Prefect API behind auth."
    )

    ui_url: str | None = Field(
        default=None,
        description="Where people open the Prefect UI, when not at the API URL without /api "
        "(e.g. / when the dashboard and the UI share one proxy, as in the docker tier).",
    )

    @property
    def url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}/api"

    @property
    def ui(self) -> str:
        """The Prefect UI's base, without a trailing slash (empty for a same-origin ``/``)."""
        return (self.ui_url or self.url.rstrip("/").removesuffix("/api")).rstrip("/")


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: int = Field(default=2, ge=1, le=64, description="Agent slots: tasks run at once.")
    pool: str = Field(default="conductor-agents", description="The Prefect work pool.")
    query_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the worker polls for scheduled runs when no event woke it "
        "(it wakes as soon as a run is scheduled or one of its runs ends).",
    )
    coordinator_pool: str = Field(
        default="conductor-coordinators",
        description="The work pool of fan-out parents: they wait for their subtasks, so they "
        "must not hold agent slots (that could deadlock).",
    )
    coordinator_slots: int = Field(
        default=2, ge=1, le=64, description="Fan-out parents that may wait at once."
    )
    preload: list[str] = Field(
        default_factory=list,
        description="Modules the worker's forkserver imports once, besides Prefect and "
        "Conductor's flows (the flow modules of your own deployments on Conductor's pools).",
    )


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Start the dashboard with `conductor up`.")
    host: str = Field(default="127.0.0.1", description="Where the dashboard listens.")
    port: int = Field(default=8501, ge=1, le=65535, description="Dashboard port.")
    password: SecretStr | None = Field(
        default=None, description="Require this password to sign in (CONDUCTOR_DASHBOARD_PASSWORD)."
    )


class ConductorSettings(BaseSettings):
    """All of Conductor's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CONDUCTOR_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home, description="Conductor's data folder.")
    tier: Tier = Field(default="standalone", description="standalone, docker or kubernetes.")
    agent: AgentSettings = Field(default_factory=AgentSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Console logs of Conductor's processes: text, or json (one object a line, "
        "task and flow-run ids on every line of a task) for Loki or another log shipper.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _AliasEnvSource(settings_cls),
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=config_file.read_config(default_home())),
        )

    # -- paths under home -------------------------------------------------------------
    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def repo_cache_dir(self) -> Path:
        return self.home / "cache" / "repos"

    @property
    def agents_dir(self) -> Path:
        return self.home / "agents"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def agent_sandbox(self) -> bool:
        """Whether agents' Bash runs in the CLI's sandbox (``agent.sandbox``, default: on for
        the standalone tier)."""
        if self.agent.sandbox is not None:
            return self.agent.sandbox
        return self.tier == "standalone"

    def secret_values(self) -> dict[str, str]:
        """The secrets these settings hold, by setting name: the auth string, the dashboard
        password and agent environment variables named like secrets (see
        ``redaction.secret_values`` for the rules)."""
        named: dict[str, str] = {}
        if self.server.auth_string is not None:
            named["server.auth_string"] = self.server.auth_string.get_secret_value()
        if self.dashboard.password is not None:
            named["dashboard.password"] = self.dashboard.password.get_secret_value()
        for name, value in self.agent.extra_env.items():
            named[f"agent.extra_env.{name}"] = value
        return secret_values(named)

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked: safe to print or render. Masked:
        the auth string, the dashboard password, agent environment variables named like
        secrets, and ``user:password@`` in the API URL."""
        data = self.model_dump(mode="json")
        for section, key in SECRET_SETTINGS:
            if data.get(section, {}).get(key):
                data[section][key] = MASK
        extra = data.get("agent", {}).get("extra_env") or {}
        for name in extra:
            if is_secret_name(name):
                extra[name] = MASK
        server = data.get("server", {})
        if isinstance(server.get("api_url"), str):
            server["api_url"] = strip_url_credentials(server["api_url"], MASK)
        return data


class _AliasEnvSource(PydanticBaseSettingsSource):
    """Short variable names for the settings people set most."""

    _ALIASES: dict[str, tuple[str, ...]] = {
        "CONDUCTOR_CLAUDE_PATH": ("agent", "claude_path"),
        "CONDUCTOR_API_URL": ("server", "api_url"),
        "CONDUCTOR_API_AUTH_STRING": ("server", "auth_string"),
        "CONDUCTOR_DASHBOARD_PASSWORD": ("dashboard", "password"),
        "CONDUCTOR_AGENTS": ("worker", "agents"),
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for var, (section, key) in self._ALIASES.items():
            value = os.environ.get(var)
            if value:
                data.setdefault(section, {})[key] = value
        return data


def load_settings(**overrides: Any) -> ConductorSettings:
    """Build settings, turning any validation problem into one clear ``InputError``."""
    path = config_path()
    try:
        return ConductorSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        secret = tuple(str(p) for p in err["loc"][:2]) in SECRET_SETTINGS or (
            len(err["loc"]) > 2 and is_secret_name(str(err["loc"][-1]))
        )
        shown = MASK if secret else repr(err.get("input"))
        raise InputError(
            f"invalid setting {where!r} = {shown}: {err['msg']} "
            f"(check CONDUCTOR_{where.upper().replace('.', '__')} and {path})",
            field=where,
        ) from exc


_run_settings_cache: tuple[Any, ConductorSettings] | None = None


def run_settings() -> ConductorSettings:
    """``load_settings()`` for code inside a flow run, built once per environment and config
    file (a run's steps each need them; building them costs about 10 ms of CPU)."""
    global _run_settings_cache
    path = config_path()
    try:
        stat = path.stat()
        file_key: tuple[Any, ...] = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        file_key = (str(path),)
    key = (
        tuple(sorted(k_v for k_v in os.environ.items() if k_v[0].startswith("CONDUCTOR_"))),
        file_key,
    )
    if _run_settings_cache is None or _run_settings_cache[0] != key:
        _run_settings_cache = (key, load_settings())
    return _run_settings_cache[1]
