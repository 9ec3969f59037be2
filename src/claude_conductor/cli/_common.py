"""What every command shares: error handling, settings, JSON output, the console."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import typer
from rich.console import Console

from claude_conductor.errors import ConductorError

try:  # Typer >= 0.29 raises the exceptions of the Click copy it vendors
    from typer._click.exceptions import ClickException as _TyperClickException
    from typer._click.exceptions import UsageError as _TyperUsageError
except ImportError:  # an older Typer raises Click's own
    _TyperClickException = click.exceptions.ClickException  # type: ignore[misc,assignment]
    _TyperUsageError = click.exceptions.UsageError  # type: ignore[misc,assignment]

__all__ = [
    "api_error_message",
    "console",
    "err_console",
    "invoke",
    "print_json",
    "run_sync",
    "settings",
]

console = Console()
err_console = Console(stderr=True)


def settings() -> Any:
    """The effective settings (imported lazily; raises InputError on a bad setting)."""
    from claude_conductor.settings import load_settings

    return load_settings()


def run_sync(coro: Any) -> Any:
    """Run a Prefect coroutine from a command: ``client.connection.run_sync`` (imported
    lazily, so commands that never talk to Prefect start fast)."""
    from claude_conductor.client.connection import run_sync as bridge

    return bridge(coro)


def print_json(data: Any) -> None:
    """One parseable JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def invoke(app: typer.Typer, argv: list[str]) -> int:
    """Run the app; turn ConductorErrors and usage errors into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="conductor", standalone_mode=False)
    except ConductorError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except (click.exceptions.UsageError, _TyperUsageError) as exc:
        # Typer >= 0.29 vendors its own Click: both kinds print the usage, the error and a
        # `--help` hint, and exit 2.
        exc.show()
        return 2
    except (click.exceptions.ClickException, _TyperClickException) as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        message = api_error_message(exc)
        if message is None:
            raise
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        return 2 if _status_of(exc) in _REFUSED else 1
    return rv if isinstance(rv, int) else 0


_REFUSED = (409, 422)
"""API answers that refuse what was sent (a bad parameter, a job variable a locked pool does not
take): the user's input, so exit 2 like any other bad input."""


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _detail(response: Any) -> str:
    """The server's reason, one line, bounded, without secrets."""
    import os

    from claude_conductor.redaction import mask_url_password, redact

    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except Exception:
        detail = response.text
    text = " ".join(str(detail).split())
    return mask_url_password(redact(text[:400] + ("..." if len(text) > 400 else ""), os.environ))


def api_error_message(exc: BaseException) -> str | None:
    """One line for a Prefect API that failed a request (a 5xx, a refused connection), or
    ``None`` when ``exc`` is something else (a bug: let it show its traceback)."""
    import httpx

    from claude_conductor.redaction import strip_url_credentials

    if isinstance(exc, httpx.HTTPStatusError):
        request, response = exc.request, exc.response
        url = strip_url_credentials(str(request.url))
        said = f"the Prefect API answered {response.status_code} {response.reason_phrase}"
        if response.status_code in _REFUSED:
            return f"{said}: {_detail(response)}; fix the value it names and run it again"
        hint = (
            "the server is overloaded or restarting: retry in a moment (`conductor status` "
            "shows whether it is up)"
            if response.status_code >= 500
            else "check the server's version and your credentials (CONDUCTOR_API_AUTH_STRING)"
        )
        return f"{said} to {request.method} {url}; {hint}"
    if isinstance(exc, httpx.TransportError):
        try:
            url = strip_url_credentials(str(exc.request.url))
        except RuntimeError:  # no request attached
            url = "the Prefect API"
        return (
            f"could not reach {url} ({type(exc).__name__}); is the server running? "
            "(`conductor status`, `conductor up`)"
        )
    return None
