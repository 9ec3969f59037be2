"""The submit form and pasted task YAML, validated by the same model (and the same messages) as
task files: ``taskfile.parse_task`` and ``describe_validation_error``. Also the settings export.
No Streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from claude_conductor import config_file
from claude_conductor.errors import TaskFileError
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.taskfile import describe_validation_error, load_yaml_text, parse_task

__all__ = [
    "FORM_FIELDS",
    "FormCheck",
    "check_form",
    "check_yaml",
    "export_settings_yaml",
]

FORM_FIELDS = (
    "kind",
    "title",
    "repo",
    "ref",
    "prompt",
    "command",
    "priority",
    "timeout_seconds",
    "max_turns",
    "max_budget_usd",
    "verify",
    "model",
)
"""The fields the form shows; errors on any other field are shown above the form."""

_OPTIONAL_TEXT = ("ref", "command", "verify", "model", "title")


@dataclass
class FormCheck:
    """A validated spec, or what is wrong, per field (``"yaml"`` for the document itself)."""

    spec: TaskSpec | None
    errors: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.errors


def _problems(data: dict[str, Any], source: str) -> tuple[TaskSpec | None, dict[str, str]]:
    try:
        return parse_task(data, source=source), {}
    except TaskFileError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ValidationError):
            return None, {"yaml": str(exc)}
        errors: dict[str, str] = {}
        for name, message in describe_validation_error(cause):
            errors.setdefault(name.split(".")[0] or "task", message)
        return None, errors


def _check(data: dict[str, Any], source: str) -> FormCheck:
    spec, errors = _problems(data, source)
    if spec is not None:
        return FormCheck(spec, warnings=_warnings(spec))
    # Cross-field rules (a prompt for the kind) only run once every field is valid: check
    # again without the bad fields, so the form shows all its problems at once.
    rest = {k: v for k, v in data.items() if k not in errors}
    if errors and rest != data:
        for name, message in _problems(rest, source)[1].items():
            errors.setdefault(name, message)
    return FormCheck(None, errors)


def _warnings(spec: TaskSpec) -> dict[str, str]:
    repo = spec.repo
    looks_remote = "://" in repo or (repo.startswith("git@") and ":" in repo)
    if not looks_remote and not Path(repo).expanduser().is_dir():
        return {
            "repo": f"{repo!r} is not a folder on this machine; the task fails unless the "
            "worker that runs it has it"
        }
    return {}


def check_form(values: dict[str, Any]) -> FormCheck:
    """Validate the form's values. Empty optional text fields count as not given."""
    data: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, str):
            value = value.strip() if name != "prompt" else value
            if name in _OPTIONAL_TEXT and not value.strip():
                continue
        data[name] = value
    if data.get("kind") != "command":
        data.pop("command", None)
    missing_repo = not str(data.get("repo") or "").strip()
    if missing_repo:
        data.pop("repo", None)
    check = _check(data, "the form")
    if missing_repo:
        check.spec = None
        check.errors["repo"] = "field 'repo': give a local repository path or a git URL"
        check.warnings.pop("repo", None)
    return check


def check_yaml(text: str, source: str = "the pasted YAML") -> FormCheck:
    """Validate a task YAML document (pasted or uploaded)."""
    if not text.strip():
        return FormCheck(None, {"yaml": f"{source} is empty; a task needs at least a prompt"})
    try:
        data = load_yaml_text(text, source)  # capped: size, depth, alias expansion
    except TaskFileError as exc:
        return FormCheck(None, {"yaml": str(exc)})
    if not isinstance(data, dict):
        return FormCheck(
            None,
            {
                "yaml": f"{source}: a task must be a YAML mapping of fields "
                "(kind, prompt, repo, ...)"
            },
        )
    return _check(data, source)


def export_settings_yaml(settings: ConductorSettings) -> str:
    """The settings as a portable YAML document, secrets left out (as `conductor config export`)."""
    return config_file.export_yaml(settings.model_dump(mode="json"))
