"""The Tier contract: every tier is one implementation of it, and what a tier tells the user
about scaling names things that exist (compose services, commands)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.base import Tier, get_tier

COMPOSE = Path(__file__).resolve().parents[2] / "deployments" / "docker" / "compose.yaml"


@pytest.mark.parametrize("name", ["standalone", "docker"])
def test_each_tier_implements_the_protocol(name: str) -> None:
    tier = get_tier(name)
    assert isinstance(tier, Tier) and tier.name == name


def test_docker_scaling_advice_names_real_compose_services(tmp_path: Path) -> None:
    services = set(yaml.safe_load(COMPOSE.read_text())["services"])
    settings = ConductorSettings.model_validate({"home": str(tmp_path), "tier": "docker"})
    advice = get_tier("docker").scaling_advice(settings)
    named = set(re.findall(r"service `([\w-]+)`", advice)) | set(
        re.findall(r"`([\w-]+)` service", advice)
    )
    assert named and named <= services, (named, services)
    assert "conductor agents scale N --tier docker" in advice


def test_an_unknown_tier_is_an_input_error() -> None:
    with pytest.raises(InputError, match="tier 'moon'"):
        get_tier("moon")
