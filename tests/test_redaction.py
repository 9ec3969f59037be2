"""One owner of secret names and masking: settings, agents, the docker tier and the
dashboard agree on what is a secret (a copy per part used to drift)."""

from __future__ import annotations

from pathlib import Path

import yaml

from claude_conductor.agents.argv import redact as agent_redact
from claude_conductor.cli.config import exportable
from claude_conductor.dashboard.forms import export_settings_yaml
from claude_conductor.redaction import is_secret_name, redact
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.docker.files import stack_config

_EXTRA_ENV = {
    "NPM_PASSWORD": "npm-password-0123",
    "REGISTRY_AUTH": "registry-auth-0123",
    "DB_PASSWD": "db-passwd-0123456",
    "GCP_CREDENTIAL": "gcp-credential-0123",
    "GITHUB_TOKEN": "ghp_token-0123456",
    "FOO": "bar",
}


def _settings(home: Path) -> ConductorSettings:
    return ConductorSettings.model_validate(
        {"home": str(home), "agent": {"extra_env": dict(_EXTRA_ENV)}}
    )


def test_docker_stack_config_drops_what_config_export_drops(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stack = stack_config(settings, agents=None)
    text = yaml.safe_dump(stack)
    for name, value in _EXTRA_ENV.items():
        if name != "FOO":
            assert name not in text and value not in text, name
    assert stack["agent"]["extra_env"] == exportable(settings)["agent"]["extra_env"]
    assert stack["agent"]["extra_env"] == {"FOO": "bar"}
    dashboard = yaml.safe_load(export_settings_yaml(settings))
    assert dashboard["agent"]["extra_env"] == {"FOO": "bar"}


def test_shown_settings_and_agent_transcripts_mask_the_same_names(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    shown = settings.public_dict()["agent"]["extra_env"]
    text = " ".join(_EXTRA_ENV.values())
    masked = agent_redact(text, _EXTRA_ENV)
    assert masked == redact(text, _EXTRA_ENV)
    for name, value in _EXTRA_ENV.items():
        secret = is_secret_name(name)
        assert (shown[name] != value) is secret, name
        assert (value not in masked) is secret, name
    assert masked.endswith(" bar")
