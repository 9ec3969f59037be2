"""Secrets: which names hold one, and how they are masked. The one owner of the idea.

Everything that shows, logs, exports or writes settings and environments asks here:
``is_secret_name`` (a variable or setting named like a secret), ``secret_values`` (the values worth
hiding in an environment), ``redact`` (a text with every secret value of an environment and
every API-key-shaped string masked), ``mask_url``/
``strip_url_credentials`` (``user:password@`` in a URL). Imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "MASK",
    "REDACTED",
    "SECRET_SETTINGS",
    "SECRET_WORDS",
    "Redactor",
    "is_secret_name",
    "mask_url_password",
    "redact",
    "secret_values",
    "strip_url_credentials",
    "url_without_secrets",
]

SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "AUTH", "CREDENTIAL")
"""A variable whose name contains one of these (any case) holds a secret."""
SECRET_SETTINGS = (("server", "auth_string"), ("dashboard", "password"))
"""Settings that hold secrets: masked when shown, never exported."""
MASK = "********"
"""What a secret setting shows as (``config show``, the dashboard)."""
REDACTED = "***"
"""What a secret value becomes inside a text (logs, transcripts, error tails)."""

_MIN_SECRET_CHARS = 8
_SECRET_SHAPES_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret (``*_API_KEY``,
    ``NPM_PASSWORD``, ``REGISTRY_AUTH``, ...)."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def strip_url_credentials(url: str, replacement: str = "") -> str:
    """``https://user:pw@host/api`` -> ``https://<replacement>@host/api`` (or no userinfo)."""
    return _URL_USERINFO.sub(f"{replacement}@" if replacement else "", url)


def url_without_secrets(url: str) -> str:
    """A git URL as it may be stored: http(s) without user or token (both are secrets there),
    other schemes without a password (``ssh://git@host/...`` keeps its user)."""
    if url.lower().startswith(("http://", "https://")):
        return strip_url_credentials(url)
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>@", url)


def mask_url_password(text: str) -> str:
    """Hide passwords and tokens in URLs: ``https://user:tok@host`` -> ``https://user:***@host``."""
    return _URL_PASSWORD.sub(rf"\g<scheme>\g<user>:{REDACTED}@", text)


def secret_values(env: Mapping[str, str]) -> dict[str, str]:
    """The secrets of ``env`` by name: variables named like a secret (``is_secret_name``)
    whose value has 8 or more characters (shorter ones would match ordinary text)."""
    return {
        name: value
        for name, value in env.items()
        if is_secret_name(name) and len(value) >= _MIN_SECRET_CHARS
    }


class Redactor:
    """Masks secret values (from an environment) and API-key-shaped strings in text."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = set(secret_values(env or {}).values())
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return _SECRET_SHAPES_RE.sub(REDACTED, text)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret of ``env`` (variables named like a secret, see
    ``is_secret_name``, 8+ characters) and every ``sk-ant-...`` key replaced by ``***``."""
    return Redactor(env)(text)
