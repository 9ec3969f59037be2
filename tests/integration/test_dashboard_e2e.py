"""The dashboard end to end: the standalone tier up with its dashboard (password protected),
driven in Debian's chromium with Python playwright. Tasks are submitted through the dashboard's
form and run by the real workers, whose agents are the real `claude` binary talking to an
in-process scripted model.

One stack serves the module (agents=2). Screenshots land in ``test-output/<test name>/`` at
the repository root (gitignored), plus ``failure.png`` and ``console.txt`` when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from claude_conductor.agents.argv import find_claude
from claude_conductor.demo.script_steps import stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from helpers import CHROMIUM_ARGS, make_repo, network_change_retried
from helpers import chromium as _chromium
from helpers import claude_pids_for as _claude_pids_for
from helpers import git as _git
from helpers import settled as _settled_in
from helpers import shot as _shot
from helpers import sign_in as _sign_in_with
from stack_fixtures import free_port, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PASSWORD = "tuba staple horse battery"
API_KEY = "sk-dashboard-e2e-key-0123456789"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
WAIT_MS = 30_000
CANCEL_GRACE_SECONDS = 30
RUN_MS = 150_000  # a real agent run on a busy machine: claude start-up, clone, commit

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)


# --------------------------------------------------------------------------- the stack


@dataclass
class DashboardStack:
    settings: ConductorSettings
    model: ScriptedModel
    env: dict[str, str]
    repo: Path
    url: str


@pytest.fixture(scope="module")
def clean_environ() -> Iterator[None]:
    """No Conductor or Prefect settings from this process's environment while the module runs:
    another module's session fixture (tests/dashboard points CONDUCTOR_API_URL at its own
    server) must not redirect this stack, its settings or the processes it starts."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("CONDUCTOR_") or name == "PREFECT_API_URL":
                mp.delenv(name)
        yield


@pytest.fixture(scope="module")
def stack(
    clean_environ: None, tmp_path_factory: pytest.TempPathFactory, agent_home: Path
) -> Iterator[DashboardStack]:
    _chromium()  # skip before bringing a whole stack up for nothing
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("dashboard-e2e")
    repo = make_repo(root / "project")
    base = make_settings(root / "home", free_port(), agents=2)
    settings = base.model_copy(
        update={
            "dashboard": base.dashboard.model_copy(
                update={"enabled": True, "port": free_port(), "password": SecretStr(PASSWORD)}
            )
        }
    )
    with ScriptedModel() as model:
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "true",
            "CONDUCTOR_DASHBOARD__PORT": str(settings.dashboard.port),
            "CONDUCTOR_DASHBOARD_PASSWORD": PASSWORD,
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
        }
        try:
            info = standalone.up(settings, base_env=env, dashboard=True, timeout_seconds=180)
            assert info.dashboard_url, info
            yield DashboardStack(
                settings=settings, model=model, env=env, repo=repo, url=info.dashboard_url
            )
        finally:
            standalone.down(settings, grace_seconds=5)


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser(stack: DashboardStack) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.shots = OUTPUT / request.node.name
    pg.shots.mkdir(parents=True, exist_ok=True)
    for stale in ("failure.png", "console.txt"):
        (pg.shots / stale).unlink(missing_ok=True)
    console: list[str] = []
    pg.console_lines = console
    pg.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    pg.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    try:
        yield pg
    finally:
        context.close()


def _save_failure(page: Any) -> None:
    (page.shots / "console.txt").write_text("\n".join(page.console_lines), encoding="utf-8")
    try:
        page.screenshot(path=str(page.shots / "failure.png"), full_page=True)
    except Exception as exc:  # the page may be gone; the test's own error matters more
        warnings.warn(f"no failure screenshot: {exc}", stacklevel=1)


_browser_test = network_change_retried(on_failure=_save_failure)


def _submit(page: Any, *, kind: str, repo: Path, prompt: str) -> str:
    """Fill the Submit page's form and send it; returns the new task's id, once the task's
    detail page (where the form leads) shows it."""
    expect(page.get_by_role("heading", name="Submit a task")).to_be_visible()
    kind_box = page.get_by_role("combobox", name="Kind")
    kind_box.click()
    page.get_by_role("option", name=kind, exact=True).click()
    expect(kind_box).to_have_value(kind)
    page.get_by_role("textbox", name="Repository").fill(str(repo))
    page.get_by_role("textbox", name="Prompt").fill(prompt)
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(re.compile(r"[?&]task=t-"), timeout=2 * WAIT_MS)
    found = re.search(r"[?&]task=([a-z0-9-]+)", page.url)
    assert found, page.url
    task_id = found.group(1)
    expect(page.get_by_text(task_id).first).to_be_visible()
    return task_id


def _cancel(page: Any) -> None:
    """Click the detail page's Cancel button until the page says cancellation is under way.
    The header redraws itself every few seconds while the task runs: a click that lands as the
    button is being replaced is lost, so it is tried again (a second cancel is harmless)."""
    asked = page.get_by_text(re.compile(r"Prefect state Cancell(ing|ed)"))
    for attempt in range(1, 4):
        # Gone (cancellation under way) or being redrawn: the check below tells.
        with contextlib.suppress(sync_api.Error):
            page.get_by_role("button", name="Cancel", exact=True).click(timeout=5_000)
        try:
            expect(asked).to_be_visible(timeout=15_000)
            return
        except AssertionError:
            if attempt == 3:
                raise


def _open_submit_page(page: Any) -> None:
    page.get_by_role("link", name="Submit").click()
    expect(page.get_by_role("heading", name="Submit a task")).to_be_visible()


# --------------------------------------------------------------------------- processes


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------- the tests


@_browser_test
def test_sign_in_refuses_a_wrong_password_and_accepts_the_right_one(
    page: Any, stack: DashboardStack
) -> None:
    _sign_in(page, stack.url, "not the password")
    expect(page.get_by_text("Wrong password")).to_be_visible()
    expect(page.get_by_text("Agents online")).to_have_count(0)
    expect(page.get_by_role("heading", name="Overview")).to_have_count(0)
    expect(page.get_by_role("link", name="Tasks")).to_have_count(0)
    expect(page.get_by_role("link", name="Submit")).to_have_count(0)
    _settled(page)
    _shot(page, "wrong-password")

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Agents online")).to_be_visible()
    expect(page.get_by_role("link", name="Submit")).to_be_visible()
    expect(page.get_by_text("Wrong password")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    _settled(page)
    assert _shot(page, "overview").stat().st_size > 10_000


@_browser_test
def test_a_task_submitted_through_the_form_succeeds_and_shows_its_diff(
    page: Any, stack: DashboardStack
) -> None:
    marker = stack.model.add_script(
        "dashboard-write",
        [
            tool_use(
                "Write",
                {"file_path": "notes/e2e.txt", "content": "written from the dashboard\n"},
            ),
            text("Wrote notes/e2e.txt for the dashboard."),
        ],
    )
    _sign_in(page, stack.url)
    expect(page.get_by_text("Agents online")).to_be_visible()
    _open_submit_page(page)
    task_id = _submit(
        page, kind="refactor", repo=stack.repo, prompt=f"Write the e2e notes {marker}"
    )

    # The page refreshes itself while the task is queued or running, then draws it all.
    expect(page.get_by_text("Prefect state Completed")).to_be_visible(timeout=RUN_MS)
    expect(page.get_by_text("succeeded").first).to_be_visible()
    expect(page.get_by_text("Wrote notes/e2e.txt for the dashboard.").first).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()

    diff_tab = page.get_by_role("tab", name="Diff (1 file)")
    diff_tab.click()
    expect(diff_tab).to_have_attribute("aria-selected", "true")
    panel = page.get_by_role("tabpanel").filter(has=page.get_by_text("Download patch"))
    expect(panel.get_by_text("notes/e2e.txt").first).to_be_visible()
    expect(panel.get_by_text("+written from the dashboard").first).to_be_visible()
    _settled(page)
    assert _shot(page, "task-detail").stat().st_size > 10_000

    # The branch the page names holds the file, as the diff says.
    caption = page.get_by_text(re.compile(r"→ branch")).first.inner_text()
    branch = re.search(r"branch\s+(\S+)", caption)
    assert branch, caption
    shown = _git(stack.repo, "show", f"{branch.group(1).strip('`')}:notes/e2e.txt")
    assert shown == "written from the dashboard\n"
    expect(page.get_by_text(task_id, exact=True).first).to_be_visible()


@_browser_test
def test_cancel_a_running_task_from_its_page_stops_its_agent(
    page: Any, stack: DashboardStack
) -> None:
    marker = stack.model.add_script("dashboard-hang", [stall(600)])
    _sign_in(page, stack.url)
    expect(page.get_by_text("Agents online")).to_be_visible()
    _open_submit_page(page)
    task_id = _submit(page, kind="generic", repo=stack.repo, prompt=f"Hang around {marker}")

    pids = _wait_for(lambda: _claude_pids_for(task_id), RUN_MS / 1000, "the agent to start")
    expect(page.get_by_text("Prefect state Running")).to_be_visible()
    expect(page.get_by_text("running").first).to_be_visible()
    _settled(page)
    _shot(page, "running")

    _cancel(page)
    # The worker stops the agent within its kill grace (1 s here); allow for a busy machine.
    _wait_for(
        lambda: not any(processes.pid_alive(p) for p in pids),
        CANCEL_GRACE_SECONDS,
        "the agent to die",
    )
    expect(page.get_by_text("Prefect state Cancelled")).to_be_visible(timeout=RUN_MS)
    expect(page.get_by_text("cancelled").first).to_be_visible()
    expect(page.get_by_text("cancelled by the user").first).to_be_visible()
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert not _claude_pids_for(task_id)
    _settled(page)
    _shot(page, "cancelled")


def _settled(page: Any) -> None:
    _settled_in(page, WAIT_MS)


def _sign_in(page: Any, url: str, password: str = PASSWORD) -> None:
    _sign_in_with(page, url, password)
