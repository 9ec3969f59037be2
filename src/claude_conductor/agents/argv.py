"""How an agent process is started: the ``claude`` binary, its argv and its environment.

``build_argv`` and ``build_env`` are pure: tests check them without spawning anything.
``redact`` (re-exported from ``claude_conductor.redaction``, the owner of secret names and
masking) masks secrets in anything that is logged or written to a transcript.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from claude_conductor.agents.confinement import Confinement, cli_settings, scope_allowed_tools
from claude_conductor.agents.kinds import HEADLESS_SYSTEM_PROMPT, policy_for, render_prompt
from claude_conductor.errors import AgentError
from claude_conductor.models import TaskSpec
from claude_conductor.redaction import Redactor, redact
from claude_conductor.settings import ConductorSettings

__all__ = [
    "MAX_ARGV_PROMPT_BYTES",
    "Redactor",
    "build_argv",
    "build_env",
    "build_shell_env",
    "find_claude",
    "prompt_on_stdin",
    "redact",
]

MAX_ARGV_PROMPT_BYTES = 100_000
"""Longer prompts go to the CLI's stdin: Linux caps one argv string at 128 KiB."""

_PASS_THROUGH_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
        "TZ", "TMPDIR", "TERM", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
        "https_proxy", "no_proxy", "VIRTUAL_ENV",
    }
)  # fmt: skip
# ANTHROPIC_API_KEY / _AUTH_TOKEN / _BASE_URL / _MODEL... and CLAUDE_CODE_* switches.
_PASS_THROUGH_PREFIXES: tuple[str, ...] = ("ANTHROPIC_", "CLAUDE_CODE_")
# The credentials of a cloud provider Claude Code can use instead, only when it is selected:
# otherwise they are the user's cloud account, which an agent has no business holding.
_PROVIDER_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "CLAUDE_CODE_USE_BEDROCK": ("AWS_",),
    "CLAUDE_CODE_USE_VERTEX": ("CLOUD_ML_", "VERTEX_", "GOOGLE_APPLICATION_CREDENTIALS"),
}
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_NEVER_PASS = frozenset({"CLAUDECODE", "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_TMPDIR"})


def find_claude(settings: ConductorSettings) -> Path:
    """The ``claude`` binary: the configured one, else the one bundled in claude-agent-sdk,
    else one on PATH."""
    configured = settings.agent.claude_path
    if configured is not None:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise AgentError(
            f"the claude binary set in agent.claude_path ({str(path)!r}) does not exist or is "
            "not executable; fix CONDUCTOR_CLAUDE_PATH, or unset it to use the bundled one"
        )
    spec = importlib.util.find_spec("claude_agent_sdk")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(folder) / "_bundled" / "claude"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("claude")
    if on_path:
        return Path(on_path)
    raise AgentError(
        "cannot find the claude binary: it is bundled in the claude-agent-sdk package "
        "(`pip install claude-agent-sdk`), or set CONDUCTOR_CLAUDE_PATH to a `claude` binary"
    )


def prompt_on_stdin(prompt: str) -> bool:
    """Whether ``prompt`` is too long for argv and must be written to the CLI's stdin."""
    return len(prompt.encode("utf-8")) > MAX_ARGV_PROMPT_BYTES


def build_argv(
    spec: TaskSpec,
    claude_path: Path | str,
    settings: ConductorSettings,
    *,
    session_id: str | None = None,
    confinement: Confinement | None = None,
) -> list[str]:
    """The argv that runs ``spec`` headless with ``--output-format stream-json``.

    With ``confinement`` (``run_agent`` always passes one), the editing tools are allowed in
    the worktree and temp folder only, and the CLI gets the boundary's settings; without it,
    only the tool policy applies. Sessions are never written to disk (Conductor does not
    resume them, and they would hold whatever secret the agent printed). The prompt comes
    last, after ``--`` (so a prompt starting with ``-`` is not an option), unless
    ``prompt_on_stdin`` says it must go to stdin instead.
    """
    policy = policy_for(spec)
    allowed = policy.allowed_tools
    if confinement is not None:
        allowed = scope_allowed_tools(allowed, confinement)
    prompt = render_prompt(spec)
    argv = [
        str(claude_path),
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        policy.permission_mode,
        "--append-system-prompt",
        HEADLESS_SYSTEM_PROMPT,
        "--no-session-persistence",
    ]
    if confinement is not None:
        settings_json = json.dumps(cli_settings(confinement, read_only=policy.read_only))
        # Only Conductor's settings: no hooks, MCP servers or rules from the repository.
        argv += ["--settings", settings_json, "--setting-sources", "user", "--strict-mcp-config"]
    if spec.max_turns is not None:
        argv += ["--max-turns", str(spec.max_turns)]
    if spec.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{spec.max_budget_usd:g}"]
    model = spec.model or settings.agent.default_model
    if model:
        argv += ["--model", model]
    if allowed:
        argv += ["--allowedTools", ",".join(allowed)]
    if policy.disallowed_tools:
        argv += ["--disallowedTools", ",".join(policy.disallowed_tools)]
    if session_id:
        argv += ["--session-id", session_id]
    if not prompt_on_stdin(prompt):
        argv += ["--", prompt]
    return argv


def build_env(
    settings: ConductorSettings,
    config_dir: Path,
    base_env: Mapping[str, str],
    *,
    temp_dir: Path | None = None,
) -> dict[str, str]:
    """The agent's environment: a filtered copy of ``base_env`` plus headless switches.

    Passed through: the basics (PATH, HOME, locale, proxies, CA bundles), ``ANTHROPIC_*``
    (API key, auth token, base URL), ``CLAUDE_CODE_*``, and the credentials of Bedrock
    (``AWS_*``) or Vertex only when ``CLAUDE_CODE_USE_BEDROCK``/``_VERTEX`` selects it; other
    variables (Conductor's own, Prefect's, unrelated secrets) are not given to the agent.
    ``temp_dir`` becomes the CLI's temp folder (``CLAUDE_CODE_TMPDIR``; its commands get a
    ``TMPDIR`` inside it).
    """
    env = build_shell_env(settings, base_env)
    env.update(
        {
            # Per-agent sessions, settings and caches: parallel agents must not collide.
            "CLAUDE_CONFIG_DIR": str(config_dir),
            # No update checks, telemetry or error reporting from headless agents.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Root in a container: without it the CLI refuses bypassPermissions.
            "IS_SANDBOX": "1",
        }
    )
    if temp_dir is not None:
        env["CLAUDE_CODE_TMPDIR"] = str(temp_dir)
    return env


def build_shell_env(settings: ConductorSettings, base_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of untrusted work (the agent, a ``kind: command`` command, ``verify``):
    the pass-through variables of ``base_env`` plus ``agent.extra_env``; never Conductor's or
    Prefect's own variables (``PREFECT_API_AUTH_STRING`` above all) or unrelated secrets."""
    prefixes = _PASS_THROUGH_PREFIXES
    for switch, provider in _PROVIDER_CREDENTIALS.items():
        if base_env.get(switch, "").strip().lower() not in _FALSE_WORDS:
            prefixes += provider
    env = {
        name: value
        for name, value in base_env.items()
        if name not in _NEVER_PASS and (name in _PASS_THROUGH_NAMES or name.startswith(prefixes))
    }
    env.setdefault("PATH", os.defpath)
    env.update(settings.agent.extra_env)
    return env
