"""Model credentials kept where a team keeps its secrets: an ``anthropic-credentials`` Prefect
Block (the API key as a secret, the base URL) on the Prefect server.

Set ``agent.credentials_block`` to a block's name and the engine builds every agent's
environment from it (``agent_base_env``, one call in the task flow) instead of the worker's
``ANTHROPIC_*`` variables, on every tier: the engine always runs in a Conductor worker and
reads the block from the Prefect API it already talks to. The key only ever travels in the
agent's environment; it is masked in the block's repr, in Prefect's API answers (unless a
client asks for secrets) and, as an environment value named like a secret, in every log line
and transcript (``redaction``).

``conductor up`` registers the block type (so the Prefect UI's Blocks catalog offers it);
``prefect block register -m claude_conductor.credentials`` does the same by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound
from pydantic import Field, SecretStr, field_validator

from claude_conductor.errors import NotFoundError
from claude_conductor.settings import ConductorSettings

__all__ = [
    "BLOCK_TYPE_SLUG",
    "CREDENTIAL_VARIABLES",
    "AnthropicCredentials",
    "agent_base_env",
    "apply_credentials",
    "load_credentials",
    "register_block_types",
]

BLOCK_TYPE_SLUG = "anthropic-credentials"
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL")
"""What a block replaces in the agent's environment: all three, so a worker's own key or
endpoint never mixes with the block's."""


class AnthropicCredentials(Block):
    """The Anthropic API key and endpoint Conductor's agents use."""

    _block_type_name: ClassVar[str] = "Anthropic Credentials"
    _block_type_slug: ClassVar[str] = BLOCK_TYPE_SLUG
    _description: ClassVar[str] = (
        "The API key (kept as a secret) and base URL that Claude Conductor's agents use. "
        "Select it with the Conductor setting agent.credentials_block."
    )

    api_key: SecretStr = Field(
        description="The Anthropic API key the agents send (ANTHROPIC_API_KEY).",
    )
    base_url: str | None = Field(
        default=None,
        description="The Messages API endpoint (ANTHROPIC_BASE_URL), e.g. a gateway; "
        "empty for Anthropic's own API.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "base_url must be an http(s) URL such as https://api.anthropic.com, "
                "or empty for Anthropic's own API"
            )
        if parts.username or parts.password:
            raise ValueError("base_url must not carry a user or password; put the key in api_key")
        return value.strip()

    def agent_env(self) -> dict[str, str]:
        """The variables this block gives an agent."""
        env = {"ANTHROPIC_API_KEY": self.api_key.get_secret_value()}
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        return env


def apply_credentials(env: Mapping[str, str], credentials: AnthropicCredentials) -> dict[str, str]:
    """``env`` with its model credentials replaced by the block's (pure)."""
    out = {k: v for k, v in env.items() if k not in CREDENTIAL_VARIABLES}
    out.update(credentials.agent_env())
    return out


async def load_credentials(name: str, client: PrefectClient | None = None) -> AnthropicCredentials:
    """The named block from the Prefect API; ``NotFoundError`` naming the setting when there
    is none."""
    try:
        block = await AnthropicCredentials.aload(name, client=client)
    except (ValueError, ObjectNotFound):  # Prefect raises ValueError for a missing one
        raise NotFoundError(
            f"agent.credentials_block = {name!r}: no {BLOCK_TYPE_SLUG!r} block of that name on "
            "the Prefect API; create it (Prefect UI > Blocks > Anthropic Credentials, or "
            "AnthropicCredentials(api_key=...).save(name)), or unset agent.credentials_block",
            field="agent.credentials_block",
            value=name,
        ) from None
    loaded: AnthropicCredentials = block
    return loaded


async def agent_base_env(
    settings: ConductorSettings, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment agents start from: this process's (or ``environ``), with the
    credentials of ``agent.credentials_block`` in place of its own when one is set."""
    env = dict(os.environ if environ is None else environ)
    name = settings.agent.credentials_block
    if not name:
        return env
    return apply_credentials(env, await load_credentials(name))


async def register_block_types(client: PrefectClient) -> None:
    """Register Conductor's block types on the API (idempotent)."""
    await AnthropicCredentials.aregister_type_and_schema(client=client)
